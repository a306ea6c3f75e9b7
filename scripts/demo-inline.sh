#!/usr/bin/env bash
# The inline case, as root: a three-namespace lab (scripts/netns-lab.sh), the agent on the
# router, a spoofed SYN-ACK flood from forged reflectors (198.19.0.0/16) while the protected host
# opens real TCP connections to a server on the internet side. Prints how many connections
# succeeded, how many spoofed SYN-ACKs reached the protected host, and the agent's counters.
# Everything stays inside lab namespaces (the lab address plan: benchmark and documentation ranges); the flood is bounded.
#
#   scripts/demo-inline.sh [BINARY]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-${REFLECTGUARD_BIN:-$repo/.build/release/reflectguard}}"
flood_packets=${DEMO_FLOOD_PACKETS:-50000}
export RG_LAB_PREFIX=rgdemo
work=$(mktemp -d /tmp/rgdemo.XXXXXX)
agent_pid=""

cleanup() {
  [[ -n "$agent_pid" ]] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  ip netns pids rgdemo-inet 2>/dev/null | xargs -r kill 2>/dev/null || true
  "$repo/scripts/netns-lab.sh" down || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in ip nft trafgen python3; do
  command -v "$tool" >/dev/null || { echo "demo-inline: needs $tool (scripts/setup.sh installs it)" >&2; exit 1; }
done

eval "$("$repo/scripts/netns-lab.sh" up)"
inet=$LAB_INET; rtr=$LAB_ROUTER; prot=$LAB_PROTECTED

# What reaches the protected host, counted before its own TCP stack would hide it.
cat > "$work/count.nft" <<'NFT'
table inet rgdemo_count {
  counter spoofed_synack {}
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    ip saddr 198.19.0.0/16 tcp flags & (syn|ack) == syn|ack counter name "spoofed_synack"
  }
}
NFT
ip netns exec "$prot" nft -f "$work/count.nft"

ip netns exec "$inet" python3 -m http.server --bind :: 8080 >/dev/null 2>&1 &
for _ in $(seq 50); do
  ip netns exec "$inet" python3 -c "import socket; socket.create_connection(('::1', 8080), 1).close()" 2>/dev/null && break
  sleep 0.1
done

ip netns exec "$rtr" "$bin" run --protect 198.18.2.0/24 --protect 2001:db8:2::/64 \
  --metrics 127.0.0.1:9477 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do grep -q '"event":"start"' "$work/agent.log" && break; sleep 0.1; done
grep -q '"event":"start"' "$work/agent.log" || { cat "$work/agent.log" >&2; exit 1; }
echo "demo-inline: agent running on the router (log: $(head -c 200 "$work/agent.log"))"

# Forged SYN-ACKs: random reflector in 198.19.0.0/16, port 443, to 198.18.2.2, random ports/seq/ack.
mac_dst=$(echo "$LAB_ROUTER_MAC" | sed 's/\([0-9a-f]*\)/0x\1/g; s/:/, /g')
mac_src=$(echo "$LAB_INET_MAC" | sed 's/\([0-9a-f]*\)/0x\1/g; s/:/, /g')
cat > "$work/flood.cfg" <<CFG
{
  $mac_dst, $mac_src, 0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
  198, 19, drnd(), drnd(), 198, 18, 2, 2,
  const16(443), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp(14, 34), const16(0),
}
CFG

cat > "$work/client.py" <<'PY'
import socket, sys
ok = 0
n = int(sys.argv[3])
for i in range(n):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)
        s.sendall(b'GET / HTTP/1.0\r\n\r\n')
        ok += s.recv(12).startswith(b'HTTP/')
        s.close()
    except Exception as e:
        print('connection', i, 'failed:', e, file=sys.stderr)
print(ok, n)
PY

echo "demo-inline: flooding $flood_packets spoofed SYN-ACKs while the protected host connects out"
ip netns exec "$inet" trafgen -o i0 -c "$work/flood.cfg" -n "$flood_packets" -q >/dev/null 2>&1 &
flood_pid=$!
read -r ok4 n4 < <(ip netns exec "$prot" python3 "$work/client.py" 198.18.1.2 8080 20)
read -r ok6 n6 < <(ip netns exec "$prot" python3 "$work/client.py" 2001:db8:1::2 8080 10)
wait "$flood_pid" || true
sleep 0.5

reached=$(ip netns exec "$prot" nft list counter inet rgdemo_count spoofed_synack | sed -n 's/.*packets \([0-9]*\).*/\1/p')
echo
echo "  legitimate connections (IPv4)   $ok4 of $n4 succeeded"
echo "  legitimate connections (IPv6)   $ok6 of $n6 succeeded"
echo "  spoofed SYN-ACKs sent           $flood_packets"
echo "  spoofed SYN-ACKs that reached the protected host   $reached"
echo
echo "  agent metrics (reflectguard_packets_total, arming):"
ip netns exec "$rtr" python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9477/metrics', timeout=3).read().decode())" \
  | grep -E '^reflectguard_(packets_total|victims_armed|arm_operations_total|queue_dropped_total)' | sed 's/^/    /'
echo
echo "  agent events:"
grep -E '"event":"(attack-start|victim-armed|queue-overload)"' "$work/agent.log" | head -5 | sed 's/^/    /' || true
