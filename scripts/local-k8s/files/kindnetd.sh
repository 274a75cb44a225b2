#!/bin/bash
# kindnetd stand-in for a single-node kind cluster (see scripts/local-k8s/node-image.sh).
set -euo pipefail
api="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
sa=/var/run/secrets/kubernetes.io/serviceaccount
node=${NODE_NAME:-$(hostname)}
cidr=""
until [ -n "$cidr" ]; do
  # kind's kindnet ClusterRole grants list/watch on nodes (no get).
  cidr=$(curl -sf --connect-timeout 3 --max-time 10 --cacert "$sa/ca.crt" \
           -H "Authorization: Bearer $(cat "$sa/token")" \
           "$api/api/v1/nodes?fieldSelector=metadata.name%3D$node" \
         | jq -r '.items[0].spec.podCIDR // empty') || true
  [ -n "$cidr" ] || { echo "waiting for node $node podCIDR"; sleep 2; }
done
echo "node $node podCIDR $cidr, cluster pod subnet ${POD_SUBNET:-?}"
cat >/etc/cni/net.d/10-kindnet.conflist.tmp <<JSON
{
  "cniVersion": "0.3.1",
  "name": "kindnet",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
              "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$cidr"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
mv /etc/cni/net.d/10-kindnet.conflist.tmp /etc/cni/net.d/10-kindnet.conflist
/usr/local/bin/select-iptables
if [ -n "${POD_SUBNET:-}" ]; then
  rule=(-s "$POD_SUBNET" ! -d "$POD_SUBNET" -m addrtype ! --dst-type LOCAL -j MASQUERADE)
  iptables -w -t nat -C POSTROUTING "${rule[@]}" 2>/dev/null || iptables -w -t nat -A POSTROUTING "${rule[@]}"
fi
trap 'exit 0' TERM INT
while true; do sleep 3600 & wait $!; done
