#!/usr/bin/env bash
# The three-namespace lab: internet — router — protected, IPv4 and IPv6, addresses
# only from the benchmark/documentation ranges, and no route out of the lab (the namespaces' only
# links are their veths to each other).
#
#   <prefix>-inet  i0 198.18.1.2/24  2001:db8:1::2/64   plays the internet; forges reflectors
#   <prefix>-rtr   r0 198.18.1.1/24  2001:db8:1::1/64   the router ReflectGuard runs on
#                  r1 198.18.2.1/24  2001:db8:2::1/64
#   <prefix>-prot  p0 198.18.2.2/24  2001:db8:2::2/64   the protected network's host
#
# Forged reflectors (198.19.0.0/16, 2001:db8:ff::/48) are routed by the router towards the
# internet side, so the protected host's answers to them (RSTs) go where they would really go.
#
# Usage: netns-lab.sh up|down|env      Prefix: RG_LAB_PREFIX (default rglab), so tests can run
# their own labs beside a demo's without name clashes. `up` prints shell assignments (names,
# router MAC) that callers can eval.
set -euo pipefail

prefix=${RG_LAB_PREFIX:-rglab}
inet=$prefix-inet
rtr=$prefix-rtr
prot=$prefix-prot

die() { echo "netns-lab: $*" >&2; exit 1; }

mac() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }

print_env() {
  local mac imac
  mac=$(mac "$rtr" r0)
  imac=$(mac "$inet" i0)
  echo "LAB_INET=$inet"
  echo "LAB_ROUTER=$rtr"
  echo "LAB_PROTECTED=$prot"
  echo "LAB_ROUTER_OUTSIDE_IF=r0"
  echo "LAB_ROUTER_INSIDE_IF=r1"
  echo "LAB_ROUTER_MAC=$mac"
  echo "LAB_INET_MAC=$imac"
}

down() {
  for ns in "$inet" "$rtr" "$prot"; do
    if ip netns list | grep -qw "^$ns"; then ip netns del "$ns"; fi
  done
}

up() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
  command -v ip >/dev/null || die "needs iproute2 (ip)"
  # Start clean: a lab left by a killed run must not make this one fail half-way.
  down
  for ns in "$inet" "$rtr" "$prot"; do ip netns add "$ns"; done
  ip link add i0 netns "$inet" type veth peer name r0 netns "$rtr"
  ip link add p0 netns "$prot" type veth peer name r1 netns "$rtr"

  for ns in "$inet" "$rtr" "$prot"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
  done

  ip -n "$inet" addr add 198.18.1.2/24 dev i0
  ip -n "$inet" addr add 2001:db8:1::2/64 dev i0 nodad
  ip -n "$rtr" addr add 198.18.1.1/24 dev r0
  ip -n "$rtr" addr add 2001:db8:1::1/64 dev r0 nodad
  ip -n "$rtr" addr add 198.18.2.1/24 dev r1
  ip -n "$rtr" addr add 2001:db8:2::1/64 dev r1 nodad
  ip -n "$prot" addr add 198.18.2.2/24 dev p0
  ip -n "$prot" addr add 2001:db8:2::2/64 dev p0 nodad
  ip -n "$inet" link set i0 up
  ip -n "$rtr" link set r0 up
  ip -n "$rtr" link set r1 up
  ip -n "$prot" link set p0 up

  # Routes only within the lab: the internet side reaches the protected network through the
  # router, the protected side uses the router as its default (the router has nowhere else to go).
  ip -n "$inet" route add 198.18.2.0/24 via 198.18.1.1
  ip -n "$inet" -6 route add 2001:db8:2::/64 via 2001:db8:1::1
  ip -n "$prot" route add default via 198.18.2.1
  ip -n "$prot" -6 route add default via 2001:db8:2::1
  ip -n "$rtr" route add 198.19.0.0/16 via 198.18.1.2
  ip -n "$rtr" -6 route add 2001:db8:ff::/48 via 2001:db8:1::2
  ip netns exec "$rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  # The forged sources arrive on r0 and are routed back out of r0, so even strict reverse-path
  # filtering would pass them; set it loose explicitly so the lab does not depend on defaults.
  ip netns exec "$rtr" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.r0.rp_filter=0

  # Pin every neighbour entry (there is no ping here, and a flood should not race ARP/ND): the
  # first packets of a test then never wait on resolution.
  local mi mr0 mr1 mp
  mi=$(mac "$inet" i0); mr0=$(mac "$rtr" r0); mr1=$(mac "$rtr" r1); mp=$(mac "$prot" p0)
  ip -n "$inet" neigh replace 198.18.1.1 lladdr "$mr0" dev i0 nud permanent
  ip -n "$inet" neigh replace 2001:db8:1::1 lladdr "$mr0" dev i0 nud permanent
  ip -n "$rtr" neigh replace 198.18.1.2 lladdr "$mi" dev r0 nud permanent
  ip -n "$rtr" neigh replace 2001:db8:1::2 lladdr "$mi" dev r0 nud permanent
  ip -n "$rtr" neigh replace 198.18.2.2 lladdr "$mp" dev r1 nud permanent
  ip -n "$rtr" neigh replace 2001:db8:2::2 lladdr "$mp" dev r1 nud permanent
  ip -n "$prot" neigh replace 198.18.2.1 lladdr "$mr1" dev p0 nud permanent
  ip -n "$prot" neigh replace 2001:db8:2::1 lladdr "$mr1" dev p0 nud permanent
  print_env
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|env   (namespace prefix: RG_LAB_PREFIX, default rglab)" >&2; exit 2 ;;
esac
