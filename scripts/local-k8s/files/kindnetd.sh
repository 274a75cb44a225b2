#!/bin/bash
# kindnetd stand-in (see scripts/local-k8s/node-image.sh), one pod per node (hostNetwork).
#  - writes the CNI config kind uses (ptp + host-local + portmap) for this node's podCIDR;
#  - masquerades traffic leaving the cluster's pod subnet;
#  - keeps a route to every other node's podCIDR via that node's InternalIP, so pods on
#    different nodes reach each other unmasqueraded (their own addresses, which
#    NetworkPolicy enforcement matches on). The nodes share one L2 network (kind's docker
#    network), so a plain next-hop route is enough. Reconciled every ROUTE_SYNC_SECONDS:
#    a node that joins, leaves or comes back with another address is picked up.
set -euo pipefail
api="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}"
sa=/var/run/secrets/kubernetes.io/serviceaccount
node=${NODE_NAME:-$(hostname)}
sync_seconds=${ROUTE_SYNC_SECONDS:-5}
# Our routes carry this protocol number, so stale ones can be told from everyone else's.
proto=73

# kind's kindnet ClusterRole grants list/watch on nodes (no get).
list_nodes() {
  curl -sf --connect-timeout 3 --max-time 10 --cacert "$sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$sa/token")" "$api/api/v1/nodes$1"
}

cidr=""
until [ -n "$cidr" ]; do
  cidr=$(list_nodes "?fieldSelector=metadata.name%3D$node" | jq -r '.items[0].spec.podCIDR // empty') || true
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

# One "podCIDR nodeIP" line per other node that has both.
peers() {
  list_nodes "" | jq -r --arg self "$node" '.items[]
    | select(.metadata.name != $self and (.spec.podCIDR // "") != "")
    | [.spec.podCIDR, ([.status.addresses[]? | select(.type == "InternalIP") | .address
                        | select(test("^[0-9.]+$"))][0] // empty)]
    | select(length == 2) | join(" ")'
}

sync_routes() {
  local wanted have peer_cidr via
  wanted=$(peers) || return 0  # API unreachable: keep the routes we have
  while read -r peer_cidr via; do
    [ -n "$peer_cidr" ] || continue
    if ! ip route show "$peer_cidr" proto "$proto" | grep -q "via $via "; then
      ip route replace "$peer_cidr" via "$via" proto "$proto" && echo "route $peer_cidr via $via"
    fi
  done <<<"$wanted"
  have=$(ip route show proto "$proto" | awk '{print $1}')
  for peer_cidr in $have; do
    if ! grep -q "^$peer_cidr " <<<"$wanted"; then
      ip route del "$peer_cidr" proto "$proto" && echo "route $peer_cidr removed (node gone)"
    fi
  done
}

trap 'exit 0' TERM INT
while true; do
  sync_routes || echo "route sync failed; retrying in ${sync_seconds} s"
  sleep "$sync_seconds" & wait $!
done
