#!/bin/bash
# runc, minus the capabilities outside this host's bounding set (see scripts/local-k8s/engine.sh).
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
strip() {
  [ -f "$1" ] || return 0
  jq --arg bnd "$bnd" --arg path "$2" '
    def caps: ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_DAC_READ_SEARCH","CAP_FOWNER","CAP_FSETID","CAP_KILL",
      "CAP_SETGID","CAP_SETUID","CAP_SETPCAP","CAP_LINUX_IMMUTABLE","CAP_NET_BIND_SERVICE","CAP_NET_BROADCAST",
      "CAP_NET_ADMIN","CAP_NET_RAW","CAP_IPC_LOCK","CAP_IPC_OWNER","CAP_SYS_MODULE","CAP_SYS_RAWIO",
      "CAP_SYS_CHROOT","CAP_SYS_PTRACE","CAP_SYS_PACCT","CAP_SYS_ADMIN","CAP_SYS_BOOT","CAP_SYS_NICE",
      "CAP_SYS_RESOURCE","CAP_SYS_TIME","CAP_SYS_TTY_CONFIG","CAP_MKNOD","CAP_LEASE","CAP_AUDIT_WRITE",
      "CAP_AUDIT_CONTROL","CAP_SETFCAP","CAP_MAC_OVERRIDE","CAP_MAC_ADMIN","CAP_SYSLOG","CAP_WAKE_ALARM",
      "CAP_BLOCK_SUSPEND","CAP_AUDIT_READ","CAP_PERFMON","CAP_BPF","CAP_CHECKPOINT_RESTORE"];
    ($bnd | explode | map(if . >= 97 then . - 87 else . - 48 end)
      | reduce .[] as $d (0; . * 16 + $d)) as $mask
    | [range(0; caps|length) as $i | select(($mask / pow(2; $i) | floor) % 2 == 1) | caps[$i]] as $ok
    | if getpath($path|fromjson) then
        setpath($path|fromjson; getpath($path|fromjson) | with_entries(.value |= map(select(. as $c | $ok | index($c)))))
      else . end' "$1" >"$1.lk" && mv "$1.lk" "$1"
}
prev=""
for a in "$@"; do
  case "$prev" in
    --bundle|-b) strip "$a/config.json" '["process","capabilities"]' ;;
    --process|-p) strip "$a" '["capabilities"]' ;;
  esac
  case "$a" in
    --bundle=*) strip "${a#--bundle=}/config.json" '["process","capabilities"]' ;;
    --process=*) strip "${a#--process=}" '["capabilities"]' ;;
  esac
  prev=$a
done
exec @RUNC@ "$@"
