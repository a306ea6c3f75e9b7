#!/usr/bin/env bash
# Installs the Debian packages ReflectGuard needs, only those missing (idempotent), and says what
# it does. Build: the C libraries (libnetfilter_queue + libmnl, libpcap, libnftables, libsystemd; zlib, libzstd
# and liblzma for compressed captures, with the gzip, zstd and xz tools the tests compress with).
# XDP path: libbpf-dev (build), clang-14 and bpftool (scripts/embed-bpf.sh rebuilds the BPF object;
# the staleness test compares it), bpftool also shows attachments in the lab.
# Packaging and its test: dpkg-dev (dpkg-deb, dpkg-shlibdeps), systemd (systemd-analyze), man-db.
# Tests and lab: nftables, iptables (nft backend), iproute2, tshark (count cross-checks),
# netsniff-ng (trafgen) and hping3 (floods), tcpdump (benchmark peer), chromium (HTML report check),
# prometheus for promtool (checks /metrics, the alerting rules and their unit tests: the only
# Debian package that ships it, 19 MB; the server it would start under systemd is disabled below).
# BGP Flowspec: gobgpd (the speaker the agent runs) and bird2 (the upstream in the lab test).
# conntrackd + conntrack (the two-router state replication lab, `state = conntrack`).
set -euo pipefail

packages=(
  pkg-config
  libnetfilter-queue-dev libmnl-dev libpcap-dev libnftables-dev libsystemd-dev
  zlib1g-dev libzstd-dev liblzma-dev gzip zstd xz-utils
  libbpf-dev clang-14 bpftool
  dpkg-dev systemd man-db
  nftables iptables iproute2
  tshark tcpdump netsniff-ng hping3
  procps psmisc
  gobgpd bird2
  prometheus
  conntrackd conntrack
)
# Optional extras that only the HTML screenshot check and benchmarks use.
if [[ "${RG_SETUP_EXTRAS:-0}" == 1 ]]; then
  packages+=(chromium hyperfine valgrind)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages: ${missing[*]}; run as root (or install them) and try again" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
  # Installed for promtool only: the Prometheus server the package starts is not wanted here.
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "setup: done"
