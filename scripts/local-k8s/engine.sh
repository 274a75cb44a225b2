#!/usr/bin/env bash
# A Docker engine of its own for the local kind cluster (socket $LK_DOCKER_SOCK), separate
# from the shared one scripts/docker-engine.sh starts, so the kind node never touches it.
#
# Why a second engine: kind runs its node with `docker run --privileged`, and Docker 20.10
# then asks runc for every capability it knows. This sandbox's capability bounding set
# lacks CAP_SYS_RESOURCE, so runc fails with
#   "runc create failed: unable to start container process: unable to apply caps:
#    operation not permitted"
# This engine's default runtime is a thin wrapper around runc that drops from the OCI spec
# (config.json, or the exec process.json) the capabilities that are not in our bounding set;
# everything else is passed to runc unchanged.
# Usage: engine.sh [start|stop|status]      then: export DOCKER_HOST=unix://$LK_DOCKER_SOCK
set -euo pipefail
# shellcheck source=scripts/local-k8s/lib.sh
. "$(dirname "$0")/lib.sh"

run_dir=/run/lk-docker
sock=$LK_DOCKER_SOCK
wrapper="$LK_BIN/runc-bounded"
logf="$LK_CACHE/logs/dockerd.log"
mkdir -p "$run_dir" "$LK_CACHE/logs"

write_wrapper() {
  local runc_bin
  runc_bin=$(command -v runc) || die "runc not found (apt-get install runc)"
  cat >"$wrapper.tmp" <<WRAP
#!/bin/bash
# runc, minus the capabilities outside this host's bounding set (see scripts/local-k8s/engine.sh).
bnd=\$(awk '/^CapBnd:/ {print \$2}' /proc/self/status)
strip() {
  [ -f "\$1" ] || return 0
  jq --arg bnd "\$bnd" --arg path "\$2" '
    def caps: ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_DAC_READ_SEARCH","CAP_FOWNER","CAP_FSETID","CAP_KILL",
      "CAP_SETGID","CAP_SETUID","CAP_SETPCAP","CAP_LINUX_IMMUTABLE","CAP_NET_BIND_SERVICE","CAP_NET_BROADCAST",
      "CAP_NET_ADMIN","CAP_NET_RAW","CAP_IPC_LOCK","CAP_IPC_OWNER","CAP_SYS_MODULE","CAP_SYS_RAWIO",
      "CAP_SYS_CHROOT","CAP_SYS_PTRACE","CAP_SYS_PACCT","CAP_SYS_ADMIN","CAP_SYS_BOOT","CAP_SYS_NICE",
      "CAP_SYS_RESOURCE","CAP_SYS_TIME","CAP_SYS_TTY_CONFIG","CAP_MKNOD","CAP_LEASE","CAP_AUDIT_WRITE",
      "CAP_AUDIT_CONTROL","CAP_SETFCAP","CAP_MAC_OVERRIDE","CAP_MAC_ADMIN","CAP_SYSLOG","CAP_WAKE_ALARM",
      "CAP_BLOCK_SUSPEND","CAP_AUDIT_READ","CAP_PERFMON","CAP_BPF","CAP_CHECKPOINT_RESTORE"];
    (\$bnd | explode | map(if . >= 97 then . - 87 else . - 48 end)
      | reduce .[] as \$d (0; . * 16 + \$d)) as \$mask
    | [range(0; caps|length) as \$i | select((\$mask / pow(2; \$i) | floor) % 2 == 1) | caps[\$i]] as \$ok
    | if getpath(\$path|fromjson) then
        setpath(\$path|fromjson; getpath(\$path|fromjson) | with_entries(.value |= map(select(. as \$c | \$ok | index(\$c)))))
      else . end' "\$1" >"\$1.lk" && mv "\$1.lk" "\$1"
}
prev=""
for a in "\$@"; do
  case "\$prev" in
    --bundle|-b) strip "\$a/config.json" '["process","capabilities"]' ;;
    --process|-p) strip "\$a" '["capabilities"]' ;;
  esac
  case "\$a" in
    --bundle=*) strip "\${a#--bundle=}/config.json" '["process","capabilities"]' ;;
    --process=*) strip "\${a#--process=}" '["capabilities"]' ;;
  esac
  prev=\$a
done
exec $runc_bin "\$@"
WRAP
  chmod 0755 "$wrapper.tmp"; mv "$wrapper.tmp" "$wrapper"
}

lk_docker() { DOCKER_HOST="unix://$sock" docker "$@"; }
running() { lk_docker info >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if running; then log "kind engine answers on $sock"; exit 0; fi
    have dockerd || apt_install docker.io
    have jq || apt_install jq
    write_wrapper
    log "starting dockerd for kind on $sock (log: $logf)"
    # setsid: outlive this script. No iptables/bridge (like the shared engine); kind makes
    # its own bridge network. Its own data-root, exec-root and managed containerd.
    setsid dockerd --host "unix://$sock" --pidfile "$run_dir/dockerd.pid" \
      --data-root "${LK_DOCKER_ROOT:-/var/lib/lk-docker}" --exec-root "$run_dir/exec" \
      --iptables=false --ip6tables=false --bridge=none \
      --add-runtime "runc-bounded=$wrapper" --default-runtime runc-bounded \
      >>"$logf" 2>&1 </dev/null &
    for _ in $(seq 60); do running && { log "kind engine ready"; exit 0; }; sleep 1; done
    tail -n 30 "$logf" >&2; die "kind dockerd did not answer within 60 s" ;;
  stop)
    if [ -s "$run_dir/dockerd.pid" ]; then
      pid=$(cat "$run_dir/dockerd.pid"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi ;;
  status) running && lk_docker version --format '{{.Server.Version}}' ;;
  *) die "usage: engine.sh [start|stop|status]" ;;
esac
