#!/bin/bash
# Two routers, flat out (BENCHMARKS.md, "Two routers"): 1,000,000 spoofed SYN-ACKs into router B as
# fast as trafgen goes while the protected host opens 100 connections at LAN round-trip time; first
# with the agent alone on B (state = conntrack, defaults: overload arming on), then with the
# kernel-only ct-state rule. Root; needs a release build (swift build -c release).
set -u
W=$(cd "$(dirname "$0")/../.." && pwd)
export RG_LAB_PREFIX=${RG_LAB_PREFIX:-rgctflat}
L=$W/scripts/conntrack-lab.sh
eval "$($L up)"
T=$LAB_DIR
cat > "$T/client.py" <<'PY'
import socket, sys, time
host, port, n, pace, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ok = slow = 0
times = []
for i in range(n):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout)
        s.settimeout(timeout)
        s.sendall(b'GET / HTTP/1.0\r\n\r\n')
        if s.recv(12).startswith(b'HTTP/'):
            ok += 1
        s.close()
    except Exception as e:
        print('connection', i, 'failed:', e, file=sys.stderr)
    dt = time.monotonic() - t0
    times.append(dt)
    if dt > 0.5:
        slow += 1
    time.sleep(pace)
times.sort()
print('RESULT', ok, n, slow, '%.1f' % (times[-1] * 1000), '%.2f' % (times[len(times) // 2] * 1000))
PY
$L sync-start
ip netns exec $LAB_SRV nft -f - <<'X'
table inet rgcount {
 counter synack {
 }
 chain pre {
  type filter hook prerouting priority -400; policy accept;
  ip saddr 198.19.0.0/16 tcp flags & (syn|ack) == syn|ack counter name "synack"
 }
}
X
ip netns exec $LAB_INET python3 -m http.server --bind 198.18.1.2 8080 >/dev/null 2>&1 &
sleep 1
dst=$(echo $LAB_RB_MAC | sed 's/\([0-9a-f]*\)/0x\1/g; s/:/, /g'); src=$(echo $LAB_INET_MAC | sed 's/\([0-9a-f]*\)/0x\1/g; s/:/, /g')
cat > $T/flood.cfg <<X
{ $dst, $src, 0x08, 0x00, 0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
  198, 19, drnd(), drnd(), 198, 18, 2, 2, const16(443), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp(14, 34), const16(0), }
X
phase() {
  ip netns exec $LAB_SRV nft reset counters table inet rgcount >/dev/null
  ip netns exec $LAB_SRV python3 $T/client.py 198.18.1.2 8080 3 0.01 3 >/dev/null
  t0=$(date +%s.%N)
  ip netns exec $LAB_INET trafgen -o i1 -c $T/flood.cfg -n 1000000 -q >/dev/null 2>&1 &
  fp=$!
  sleep 0.5
  r=$(ip netns exec $LAB_SRV python3 $T/client.py 198.18.1.2 8080 100 0.01 3)
  wait $fp
  t1=$(date +%s.%N)
  a=$(ip netns exec $LAB_SRV nft list counter inet rgcount synack | sed -n 's/.*packets \([0-9]*\).*/\1/p')
  echo "$1: $r; spoofed reaching the host $a/1000000; flood took $(echo "$t1 - $t0" | bc) s"
}
ip netns exec $LAB_RB $W/.build/release/reflectguard run --protect 198.18.2.0/24 -D state=conntrack -D 'ct_sync_iface={ "y1" }' --metrics 127.0.0.1:9514 2>$T/agent.log &
ap=$!
sleep 3
ip netns exec $LAB_RB sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
phase "agent (state=conntrack, defaults)"
ip netns exec $LAB_RB curl -s http://127.0.0.1:9514/metrics | grep -E "^reflectguard_(victims_armed|queue_dropped_total|ct_held_total|ct_held_matched_total|ct_held_budget_total|packets_received_total|queue_overloads_total)"
grep -o '"event":"[a-z-]*"' $T/agent.log | sort | uniq -c
kill $ap; wait $ap
$W/.build/release/reflectguard nft generate --kernel-only --protect 198.18.2.0/24 -D state=conntrack > $T/ko.nft
ip netns exec $LAB_RB nft -f $T/ko.nft
phase "kernel-only ct state invalid drop"
$L down
