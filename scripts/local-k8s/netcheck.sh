#!/usr/bin/env bash
# Pod networking across the nodes of a local kind cluster, checked for real:
#   1. a server pod and a client pod on every node; every client reaches every server by pod IP
#      (cross-node traffic takes the kindnetd stand-in's routes) and by Service name (CoreDNS and
#      kube-proxy on whatever node they run);
#   2. a NetworkPolicy lets only clients labelled access=yes in: from every node, those get an
#      answer and the others none (kube-router's firewall, netpol.sh, on every node).
# Leaves nothing behind (its namespace is deleted). Usage: netcheck.sh [CONTEXT]
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

ctx=${1:-kind-$(lk_cluster)}
ns=lk-netcheck
image=$(chart_image prefectServer)  # loaded by up.sh; has python3 (Debian)
k() { kubectl --context "$ctx" "$@"; }
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() { k delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

mapfile -t nodes < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[ "${#nodes[@]}" -ge 2 ] || die "$ctx has ${#nodes[@]} node(s); the cross-node check needs at least 2"
k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
k create namespace "$ns" >/dev/null

pod() {  # pod NAME NODE ROLE ACCESS COMMAND
  k -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {role: $3, access: "$4"}}
spec:
  nodeName: $2
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $image
      imagePullPolicy: Never
      command:
        - python3
        - -c
        - |
          $5
YAML
}
serve='import http.server as h; h.HTTPServer(("", 8080), h.SimpleHTTPRequestHandler).serve_forever()'
idle='import time; time.sleep(86400)'
i=0
for n in "${nodes[@]}"; do
  access=yes; [ $((i % 2)) = 1 ] && access=no
  pod "server-$i" "$n" server none "$serve"
  pod "client-$i" "$n" client "$access" "$idle"
  i=$((i + 1))
done
k -n "$ns" expose pod server-0 --port 8080 --name server-0 >/dev/null
k -n "$ns" wait --for=condition=Ready pod --all --timeout=180s >/dev/null

# fetch CLIENT URL: 0 when the client gets an HTTP answer within 3 s
fetch() {
  k -n "$ns" exec "$1" -- python3 -c \
    "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=3)" "$2" >/dev/null 2>&1
}
# expect CLIENT URL yes|no: retried for up to 60 s (policy enforcement trails a pod's start)
expect() {
  local deadline=$((SECONDS + 60)) got
  while true; do
    if fetch "$1" "$2"; then got=yes; else got=no; fi
    [ "$got" = "$3" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || { log "FAIL: $1 -> $2: expected $3, got $got"; return 1; }
    sleep 3
  done
}

failed=0
count=0
# probe CLIENT URL WANT WHAT: one check, counted and logged
probe() {
  count=$((count + 1))
  if expect "$1" "$2" "$3"; then log "ok: $4: $3"; else failed=$((failed + 1)); fi
}
check_all() {  # check_all on|off: every client against every server, and the Service by name
  local c s want ip access
  for c in $(seq 0 $((${#nodes[@]} - 1))); do
    access=$(k -n "$ns" get pod "client-$c" -o jsonpath='{.metadata.labels.access}')
    want=yes
    if [ "$1" = on ] && [ "$access" = no ]; then want=no; fi
    for s in $(seq 0 $((${#nodes[@]} - 1))); do
      ip=$(k -n "$ns" get pod "server-$s" -o jsonpath='{.status.podIP}')
      probe "client-$c" "http://$ip:8080/" "$want" \
        "policy $1: client (access=$access) on ${nodes[$c]} -> server on ${nodes[$s]} ($ip)"
    done
    probe "client-$c" "http://server-0.$ns.svc.cluster.local:8080/" "$want" \
      "policy $1: client (access=$access) on ${nodes[$c]} -> Service server-0 by DNS name"
  done
}

check_all off
k -n "$ns" apply -f - >/dev/null <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: servers-only-from-access-yes}
spec:
  podSelector: {matchLabels: {role: server}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {access: "yes"}}}]
      ports: [{port: 8080}]
YAML
check_all on
[ "$failed" = 0 ] || die "$failed of $count cross-node checks failed on $ctx"
log "pod networking and NetworkPolicy across ${#nodes[@]} nodes: $count checks passed"
