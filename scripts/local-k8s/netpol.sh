#!/usr/bin/env bash
# NetworkPolicy enforcement for the local kind cluster: kube-router's firewall only
# (--run-router=false --run-service-proxy=false), as a DaemonSet next to the kindnetd
# stand-in. It programs iptables + ipset, which this kernel has.
#
# Why not kind's own way: kind's kindnetd (not published as a Go module) and
# sigs.k8s.io/kube-network-policies both hand packets to user space with the nftables
# `queue` statement, and this kernel is built without CONFIG_NFT_QUEUE:
#   nft add rule inet t c queue num 100
#   -> Error: Could not process rule: No such file or directory
# Usage: netpol.sh [CONTEXT]   (default kind-<name in kind-config.yaml>)
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

cluster=$(lk_cluster)
ctx=${1:-kind-$cluster}
IMAGE="local/kube-router:$KUBE_ROUTER_VERSION"

"$LK_HERE/build-tools.sh" kube-router
if ! image_exists "$IMAGE"; then
  d="$LK_CACHE/nodeimage/img-kube-router"; rm -rf "$d"; mkdir -p "$d"
  cp "$LK_BIN/kube-router-$KUBE_ROUTER_VERSION/kube-router" "$d/kube-router.bin"
  cp "$LK_HERE/files/select-iptables.sh" "$d/select-iptables"
  printf '#!/bin/sh\n/usr/local/bin/select-iptables\nexec /usr/local/lib/kube-router "$@"\n' >"$d/kube-router"
  chmod 0755 "$d/kube-router" "$d/select-iptables"
  cat >"$d/Dockerfile" <<DF
FROM local/kind-node-rootfs:$DEBIAN_SUITE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ipset \
    && rm -rf /var/lib/apt/lists/*
COPY kube-router.bin /usr/local/lib/kube-router
COPY select-iptables kube-router /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/kube-router"]
DF
  log "building $IMAGE"
  "${NICE[@]}" docker build -q --network host -t "$IMAGE" "$d" >/dev/null
fi
kind load docker-image "$IMAGE" --name "$cluster" >/dev/null

kubectl --context "$ctx" apply -f - <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-router, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-router-firewall}
rules:
  - apiGroups: [""]
    resources: [namespaces, pods, services, nodes, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-router-firewall}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-router-firewall}
subjects: [{kind: ServiceAccount, name: kube-router, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-router-firewall, namespace: kube-system, labels: {k8s-app: kube-router-firewall}}
spec:
  selector: {matchLabels: {k8s-app: kube-router-firewall}}
  template:
    metadata: {labels: {k8s-app: kube-router-firewall}}
    spec:
      serviceAccountName: kube-router
      hostNetwork: true
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      containers:
        - name: kube-router
          image: $IMAGE
          imagePullPolicy: Never
          args: [--run-firewall=true, --run-router=false, --run-service-proxy=false, --health-port=20244]
          env:
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          securityContext: {privileged: true}
          livenessProbe:
            httpGet: {path: /healthz, port: 20244}
            initialDelaySeconds: 10
            periodSeconds: 10
          volumeMounts:
            - {name: lib-modules, mountPath: /lib/modules, readOnly: true}
            - {name: xtables-lock, mountPath: /run/xtables.lock}
      volumes:
        - name: lib-modules
          hostPath: {path: /lib/modules}
        - name: xtables-lock
          hostPath: {path: /run/xtables.lock, type: FileOrCreate}
YAML
kubectl --context "$ctx" -n kube-system rollout status ds/kube-router-firewall --timeout=180s
log "NetworkPolicy enforcement (kube-router firewall) running on $ctx"
