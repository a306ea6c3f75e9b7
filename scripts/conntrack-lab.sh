#!/usr/bin/env bash
# The two-router lab: asymmetric routing with conntrack replicated by conntrackd. The protected
# host's SYNs leave through router A; the servers' SYN-ACKs come back through router B, which
# never sees the SYNs. Addresses only from the benchmark/documentation ranges, no route out.
#
#   <prefix>-srv  s0 198.18.2.2/24 (default via A)         the protected host
#                 s1 198.18.3.2/24 (from B)
#   <prefix>-ra   a0 198.18.2.1/24  a1 198.18.1.1/24        router A: outbound path
#                 y0 198.18.9.1/30 (sync link to B)
#   <prefix>-rb   b0 198.18.3.1/24  b1 198.18.4.1/24        router B: return path (the agent's)
#                 y1 198.18.9.2/30 (sync link to A)
#   <prefix>-inet i0 198.18.1.2/24 (from A)                 the internet: server, forged flood
#                 i1 198.18.4.2/24 (to B: 198.18.2.0/24 goes back through B)
#
# conntrackd runs on A and B (FTFW over unicast UDP on the sync link) with the configuration of
# docs/conntrack.md; both routers track (a `ct` rule on A; on B the agent's rules or the
# kernel-only ruleset).
#
# Usage: conntrack-lab.sh up|down|env|sync-start|sync-stop|link-down|link-up
#        conntrack-lab.sh serve|server-ready|delay MS|delay-on|flood COUNT [GAP]|connect N PACE TIMEOUT|spoofed|sent|count-reset
# Prefix: RG_LAB_PREFIX (default rgctlab). `up` prints shell assignments callers can eval.
# The integration tests (ConntrackLabTests) and scripts/bench/conntrack-flat-out.sh drive the lab
# only through these commands, so the two measure the same thing.
set -euo pipefail

prefix=${RG_LAB_PREFIX:-rgctlab}
srv=$prefix-srv
ra=$prefix-ra
rb=$prefix-rb
inet=$prefix-inet
dir=${RG_LAB_DIR:-/tmp/$prefix}

die() { echo "conntrack-lab: $*" >&2; exit 1; }
mac() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }

print_env() {
  echo "LAB_SRV=$srv"
  echo "LAB_RA=$ra"
  echo "LAB_RB=$rb"
  echo "LAB_INET=$inet"
  echo "LAB_DIR=$dir"
  echo "LAB_RB_MAC=$(mac "$rb" b1)"
  echo "LAB_INET_MAC=$(mac "$inet" i1)"
}

# The working configuration (docs/conntrack.md explains each setting). $1 router name, $2 own
# sync address, $3 the peer's.
conf() {
  cat <<EOF
Sync {
	Mode FTFW {
		# Replicated entries go straight into this router's kernel table, where the
		# return path needs them, not into a userspace cache that only a fail-over commits.
		DisableExternalCache on
	}
	UDP {
		IPv4_address $2
		IPv4_Destination_Address $3
		Port 3780
		Interface $4
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
	Options {
		# Injected entries carry no sequence numbers: with window tracking on, about half
		# of the connections fail on the router that did not see their start.
		TCPWindowTracking Off
	}
}
General {
	HashSize 32768
	HashLimit 131072
	LogFile $dir/conntrackd-$1.log
	Syslog off
	LockFile $dir/conntrackd-$1.lock
	UNIX {
		Path $dir/conntrackd-$1.ctl
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address 198.18.9.0/30
		}
		# SYN_SENT and SYN_RECV are the states a SYN-ACK on the other path needs: the
		# example configuration's ESTABLISHED alone replicates a flow only after its
		# handshake, too late for every one of them.
		State Accept {
			SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE for TCP
		}
	}
}
EOF
}

down() {
  sync_stop || true
  for ns in "$srv" "$ra" "$rb" "$inet"; do
    if ip netns list | grep -qw "^$ns"; then
      # Only what runs inside our own namespaces (the flood, the delay line, servers).
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns"
    fi
  done
  rm -rf "$dir"
}

# Starts a daemon with nothing of ours open: a caller reading our output to its end (a test
# harness) would otherwise wait for the daemon, which inherits every descriptor it was given.
daemon() {
  (
    for fd in $(ls "/proc/$BASHPID/fd"); do
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@"
  ) </dev/null >/dev/null 2>&1
}

sync_start() {
  command -v conntrackd >/dev/null || die "needs conntrackd (scripts/setup.sh installs it)"
  daemon ip netns exec "$ra" conntrackd -C "$dir/conntrackd-ra.conf" -d
  daemon ip netns exec "$rb" conntrackd -C "$dir/conntrackd-rb.conf" -d
  # Up when both answer on their control sockets.
  for _ in $(seq 50); do
    if ip netns exec "$ra" conntrackd -C "$dir/conntrackd-ra.conf" -s >/dev/null 2>&1 &&
       ip netns exec "$rb" conntrackd -C "$dir/conntrackd-rb.conf" -s >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "conntrackd did not come up (see $dir/conntrackd-*.log)"
}

sync_stop() {
  for r in ra rb; do
    [[ -f $dir/conntrackd-$r.conf ]] || continue
    ip netns exec "$prefix-$r" conntrackd -C "$dir/conntrackd-$r.conf" -k >/dev/null 2>&1 || true
  done
}

up() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
  down
  mkdir -p "$dir"
  for ns in "$srv" "$ra" "$rb" "$inet"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  ip link add s0 netns "$srv" type veth peer name a0 netns "$ra"
  ip link add s1 netns "$srv" type veth peer name b0 netns "$rb"
  ip link add a1 netns "$ra" type veth peer name i0 netns "$inet"
  ip link add b1 netns "$rb" type veth peer name i1 netns "$inet"
  ip link add y0 netns "$ra" type veth peer name y1 netns "$rb"

  ip -n "$srv" addr add 198.18.2.2/24 dev s0
  ip -n "$srv" addr add 198.18.3.2/24 dev s1
  ip -n "$ra" addr add 198.18.2.1/24 dev a0
  ip -n "$ra" addr add 198.18.1.1/24 dev a1
  ip -n "$ra" addr add 198.18.9.1/30 dev y0
  ip -n "$rb" addr add 198.18.3.1/24 dev b0
  ip -n "$rb" addr add 198.18.4.1/24 dev b1
  ip -n "$rb" addr add 198.18.9.2/30 dev y1
  ip -n "$inet" addr add 198.18.1.2/24 dev i0
  ip -n "$inet" addr add 198.18.4.2/24 dev i1
  for l in "$srv s0" "$srv s1" "$ra a0" "$ra a1" "$ra y0" "$rb b0" "$rb b1" "$rb y1" "$inet i0" "$inet i1"; do
    set -- $l; ip -n "$1" link set "$2" up
  done

  # Out through A, back through B.
  ip -n "$srv" route add default via 198.18.2.1 dev s0
  ip -n "$inet" route add 198.18.2.0/24 via 198.18.4.1 dev i1
  ip -n "$ra" route add 198.19.0.0/16 via 198.18.1.2
  ip -n "$rb" route add 198.18.2.0/24 via 198.18.3.2 dev b0
  for ns in "$ra" "$rb"; do ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1; done
  # The host gets its SYN-ACKs on s1 for an address of s0, and the routers forward one direction
  # of each flow: reverse-path filtering off everywhere, explicitly.
  for ns in "$srv" "$ra" "$rb" "$inet"; do
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  done
  for l in "$srv s0" "$srv s1" "$ra a0" "$ra a1" "$rb b0" "$rb b1" "$inet i0" "$inet i1"; do
    set -- $l; ip netns exec "$1" sysctl -qw "net.ipv4.conf.$2.rp_filter=0"
  done

  # Pinned neighbours: a flood must not race ARP.
  ip -n "$srv" neigh replace 198.18.2.1 lladdr "$(mac "$ra" a0)" dev s0 nud permanent
  ip -n "$ra" neigh replace 198.18.2.2 lladdr "$(mac "$srv" s0)" dev a0 nud permanent
  ip -n "$ra" neigh replace 198.18.1.2 lladdr "$(mac "$inet" i0)" dev a1 nud permanent
  ip -n "$inet" neigh replace 198.18.1.1 lladdr "$(mac "$ra" a1)" dev i0 nud permanent
  ip -n "$inet" neigh replace 198.18.4.1 lladdr "$(mac "$rb" b1)" dev i1 nud permanent
  ip -n "$rb" neigh replace 198.18.4.2 lladdr "$(mac "$inet" i1)" dev b1 nud permanent
  ip -n "$rb" neigh replace 198.18.3.2 lladdr "$(mac "$srv" s1)" dev b0 nud permanent
  ip -n "$ra" neigh replace 198.18.9.2 lladdr "$(mac "$rb" y1)" dev y0 nud permanent
  ip -n "$rb" neigh replace 198.18.9.1 lladdr "$(mac "$ra" y0)" dev y1 nud permanent

  # Router A only has to track (any ct expression makes the kernel track the namespace's flows).
  ip netns exec "$ra" nft -f - <<'EOF'
table inet rgct {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ct state invalid counter
	}
}
EOF
  # nf_conntrack_tcp_loose=0: conntrackd re-creating an entry otherwise clashes with one the
  # kernel picked up mid-stream (a few dropped packets a run). The sysctl exists once tracking is on.
  ip netns exec "$ra" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
  conf ra 198.18.9.1 198.18.9.2 y0 > "$dir/conntrackd-ra.conf"
  conf rb 198.18.9.2 198.18.9.1 y1 > "$dir/conntrackd-rb.conf"
  # What reaches the protected host from the spoofed reflectors (198.19.0.0/16), before anything
  # of the host's own can drop it.
  ip netns exec "$srv" nft -f - <<'EOF'
table inet rgcount {
	counter synack {
	}
	chain pre {
		type filter hook prerouting priority -400; policy accept;
		ip saddr 198.19.0.0/16 tcp flags & (syn|ack) == syn|ack counter name "synack"
	}
}
EOF
  print_env
}

# The server the protected host connects to: HTTP on 198.18.1.2:8080 in the internet namespace,
# in the foreground (exec: the caller's pid becomes the server's; run it in the background).
serve() {
  exec ip netns exec "$inet" python3 -m http.server --bind 198.18.1.2 8080
}

# Returns once the server listens.
server_ready() {
  for _ in $(seq 50); do
    ip netns exec "$inet" python3 -c "import socket; socket.create_connection(('198.18.1.2', 8080), 1).close()" 2>/dev/null && return 0
    sleep 0.1
  done
  die "server did not come up"
}

# A userspace delay line (no netem here) of $1 ms on NFQUEUE 7 in the internet namespace, in the
# foreground like `serve`; `delay-on` then sends the server's answers through it.
delay() {
  exec ip netns exec "$inet" python3 "$(dirname "$0")/nfq-delay.py" 7 "$1"
}

delay_on() {
  ip netns exec "$inet" iptables-nft -A OUTPUT -p tcp --sport 8080 -j NFQUEUE --queue-num 7
}

# $1 spoofed SYN-ACKs from random 198.19.0.0/16 reflectors (random ports, sequence and ack) to
# 198.18.2.2:443 into router B's outside interface; $2 the gap between packets (trafgen -t, e.g.
# 40us), none: flat out. RG_FLOOD_OPTIONS=1: the SYN-ACKs echo MSS, SACK-permitted and window
# scale, as reflectors answer forged SYNs that offered them (default: no options, as bare forged
# SYNs draw). Runs in the foreground (exec: the caller's pid becomes trafgen's).
flood() {
  local hex='s/\([0-9a-f]*\)/0x\1/g; s/:/, /g' cfg=$dir/flood-$BASHPID.cfg
  local len=40 off=0x50 opts=''
  if [[ ${RG_FLOOD_OPTIONS:-0} == 1 ]]; then
    len=52 off=0x80 opts='0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x01, 0x03, 0x03, 0x07, 0x01, 0x01,'
  fi
  cat > "$cfg" <<EOF
{ $(mac "$rb" b1 | sed "$hex"), $(mac "$inet" i1 | sed "$hex"), 0x08, 0x00,
  0x45, 0x00, const16($len), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
  198, 19, drnd(), drnd(), 198, 18, 2, 2,
  const16(443), drnd(2), drnd(4), drnd(4), $off, 0x12, const16(64240), csumtcp(14, 34), const16(0), $opts }
EOF
  local pace=()
  if [[ -n ${2:-} ]]; then pace=(-t "$2" -P 1); fi
  exec ip netns exec "$inet" trafgen -o i1 -c "$cfg" -n "$1" -q "${pace[@]}"
}

# $1 fresh connections from the protected host to the server, $2 s apart, each timed from connect
# to the response's first bytes ($3 s at most): scripts/lab-client.py, which prints
# `RESULT ok total slow worst_ms median_ms retransmitted` (slow: over 0.5 s; retransmitted:
# connections whose SYN was sent again, a lost first SYN-ACK).
connect() {
  ip netns exec "$srv" python3 "$(dirname "$0")/lab-client.py" 198.18.1.2 8080 "$1" "$2" "$3"
}

# Packets the internet namespace sent towards router B (the flood, plus the server's few answers).
sent() {
  ip netns exec "$inet" cat /sys/class/net/i1/statistics/tx_packets
}

spoofed() {
  ip netns exec "$srv" nft list counter inet rgcount synack | sed -n 's/.*packets \([0-9]*\).*/\1/p'
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  sync-start) sync_start ;;
  sync-stop) sync_stop ;;
  # The sync link cut and restored (conntrackd keeps running on both routers).
  link-down) ip -n "$ra" link set y0 down ;;
  link-up) ip -n "$ra" link set y0 up; ip -n "$ra" neigh replace 198.18.9.2 lladdr "$(mac "$rb" y1)" dev y0 nud permanent ;;
  serve) serve ;;
  server-ready) server_ready ;;
  delay) delay "${2:?delay MS}" ;;
  delay-on) delay_on ;;
  flood) flood "${2:?flood COUNT [GAP]}" "${3:-}" ;;
  connect) connect "${2:?connect N PACE TIMEOUT}" "${3:-0.01}" "${4:-3}" ;;
  spoofed) spoofed ;;
  sent) sent ;;
  count-reset) ip netns exec "$srv" nft reset counters table inet rgcount >/dev/null ;;
  *) echo "usage: $0 up|down|env|sync-start|sync-stop|link-down|link-up|serve|server-ready|delay MS|delay-on|flood COUNT [GAP]|connect N PACE TIMEOUT|spoofed|sent|count-reset   (prefix: RG_LAB_PREFIX)" >&2; exit 2 ;;
esac
