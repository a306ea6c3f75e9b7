#!/bin/bash
# Two routers, flat out (BENCHMARKS.md, "Two routers"): spoofed SYN-ACKs into router B as fast as
# trafgen goes while the protected host opens connections; first with the agent alone on B
# (state = conntrack, defaults: overload arming on), then with the kernel-only ct-state rule, in
# the same lab. The lab is scripts/conntrack-lab.sh (the integration tests drive the same
# commands). Root; needs a release build (swift build -c release).
#
# RG_DELAY_MS    delay line on the server's answers (default 0: LAN round-trip time)
# RG_FLOOD       spoofed SYN-ACKs per phase (default 1000000)
# RG_CONNS       legitimate connections per phase (default 100)
# RG_AGENT_ARGS  extra arguments for the agent (e.g. "--queue-maxlen 65536")
# RG_FLOOD_OPTIONS=1  the spoofed SYN-ACKs echo SACK-permitted and window scale (conntrack-lab.sh)
# RG_BIN         the binary (default .build/release/reflectguard)
set -u
W=$(cd "$(dirname "$0")/../.." && pwd)
export RG_LAB_PREFIX=${RG_LAB_PREFIX:-rgctflat}
L=$W/scripts/conntrack-lab.sh
delay=${RG_DELAY_MS:-0}
flood=${RG_FLOOD:-1000000}
conns=${RG_CONNS:-100}
bin=${RG_BIN:-$W/.build/release/reflectguard}
trap '$L down' EXIT
eval "$($L up)"
T=$LAB_DIR
$L sync-start
$L serve >/dev/null 2>&1 &
$L server-ready
if (( delay > 0 )); then
  $L delay "$delay" >/dev/null 2>&1 &
  sleep 0.3
  $L delay-on
fi

phase() {
  $L connect 3 0.01 3 >/dev/null   # warm: server, caches
  $L count-reset
  t0=$(date +%s.%N)
  $L flood "$flood" &
  fp=$!
  sleep 0.5
  r=$($L connect "$conns" 0.01 3)
  wait $fp
  t1=$(date +%s.%N)
  echo "$1, +$delay ms: $r; spoofed reaching the host $($L spoofed)/$flood; flood took $(echo "$t1 - $t0" | bc) s"
}
# shellcheck disable=SC2086
ip netns exec "$LAB_RB" "$bin" run --protect 198.18.2.0/24 -D state=conntrack \
  -D 'ct_sync_iface={ "y1" }' --metrics 127.0.0.1:9514 ${RG_AGENT_ARGS:-} 2>"$T/agent.log" &
ap=$!
sleep 3
ip netns exec "$LAB_RB" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
phase "agent (state=conntrack ${RG_AGENT_ARGS:-defaults}, flood options ${RG_FLOOD_OPTIONS:-0})"
ip netns exec "$LAB_RB" curl -s http://127.0.0.1:9514/metrics |
  grep -E "^reflectguard_(victims_armed|queue_dropped_total|ct_held_total|ct_held_matched_total|ct_held_budget_total|packets_received_total|queue_overloads_total|kernel_drops_total)"
ip netns exec "$LAB_RB" nft list chain inet reflectguard armed 2>/dev/null | grep -E "counter|limit" | sed 's/^\s*/  kernel: /'
grep -o '"event":"[a-z-]*"' "$T/agent.log" | sort | uniq -c
kill $ap; wait $ap
"$bin" nft generate --kernel-only --protect 198.18.2.0/24 -D state=conntrack > "$T/ko.nft"
ip netns exec "$LAB_RB" nft -f "$T/ko.nft"
phase "kernel-only ct state invalid drop"
