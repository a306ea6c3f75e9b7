# shellcheck shell=bash
# `scripts/bench.sh kernel` (sourced by bench.sh, which has built the release binary into $bin):
# the armed kernel path, nft against XDP (`-D kernel_path=nft|xdp`), side by side in one run, in
# the three-namespace lab (scripts/netns-lab.sh) with inside_ifaces/outside_ifaces set and every
# protected network armed (kernel_enforce = always). The agent runs as deployed in both; only
# kernel_path differs.
#
# The same flat-out flood of forged SYN-ACKs (trafgen, one process pinned to core 0, from
# 198.19.0.0/16 to 198.18.2.2) against each path, alternated over RG_KERNEL_ROUNDS rounds:
#   - the rate the pinned sender reaches (frames it put on i0 per second);
#   - CPU per dropped packet. On veth the receiving side runs in the sender's context: veth_xmit
#     hands the frame to the peer (netif_rx, or the XDP ring and its NAPI poll), and the softirq
#     runs on the sender's way out of the system call, or in ksoftirqd under load. So the cost is
#     the sender's task-clock (perf stat, exact, children included) plus the run time of
#     ksoftirqd/0 and /1 (schedstat) over the flood, per frame sent. A floor round sends the same
#     flood with the router's r0 down (veth_xmit drops at once): its cost is the sender's own, and
#     cost - floor is what the path itself costs a dropped packet. Also, coarser and with the
#     neighbours' work in it, system + irq + softirq ticks of both cores (/proc/stat);
#   - XDP alone: the program's run time per packet from the kernel's BPF run-time statistics
#     (kernel.bpf_stats_enabled, run_time_ns / run_cnt).
# Knobs: RG_KERNEL_FLOOD (1000000 frames a flood), RG_KERNEL_ROUNDS (2).

kernel_flood=${RG_KERNEL_FLOOD:-1000000}
kernel_rounds=${RG_KERNEL_ROUNDS:-2}
kernel_port=9517

kernel_prereqs() {
    [[ $(id -u) -eq 0 ]] || { echo "bench: kernel needs root (network namespaces, XDP)" >&2; exit 1; }
    local t
    for t in ip nft trafgen taskset bpftool curl perf; do
        command -v "$t" >/dev/null || { echo "bench: kernel needs '$t' (scripts/setup.sh)" >&2; exit 1; }
    done
}

kernel_setup() {
    kwork=$(mktemp -d /tmp/rg-bench-kernel.XXXXXX)
    klab=rgb-kernel-$$
    kpids=()
    trap kernel_cleanup EXIT
    eval "$(RG_LAB_PREFIX=$klab scripts/netns-lab.sh up)"
    kinet=$LAB_INET; krtr=$LAB_ROUTER; kprot=$LAB_PROTECTED
    # What gets through is counted (and dropped) on the protected host before its stack.
    ip netns exec "$kprot" nft -f - <<'EOF'
table inet rgbench {
    counter spoofed {}
    chain pre {
        type filter hook prerouting priority -400; policy accept;
        ip saddr 198.19.0.0/16 tcp flags & (syn | ack) == syn | ack counter name "spoofed" drop
    }
}
EOF
    local d s
    d=$(sed 's/\([0-9a-f][0-9a-f]\)/0x\1/g; s/:/, /g' <<<"$LAB_ROUTER_MAC")
    s=$(sed 's/\([0-9a-f][0-9a-f]\)/0x\1/g; s/:/, /g' <<<"$LAB_INET_MAC")
    cat >"$kwork/synack.cfg" <<EOF
{
  $d, $s, 0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
  198, 19, drnd(), drnd(), 198, 18, 2, 2,
  const16(443), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp(14, 34), const16(0),
}
EOF
    kstats_before=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
    sysctl -qw kernel.bpf_stats_enabled=1 || echo "bench: WARNING: kernel.bpf_stats_enabled not settable; no program run time"
}

kernel_cleanup() {
    local p
    for p in "${kpids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${kpids[@]}"; do wait "$p" 2>/dev/null || true; done
    sysctl -qw kernel.bpf_stats_enabled="${kstats_before:-0}" 2>/dev/null || true
    RG_LAB_PREFIX=$klab scripts/netns-lab.sh down || true
    echo "bench: kernel raw results and logs in $kwork"
}

# kernel_agent PATH: the agent as deployed, with kernel_path PATH; waits for its start event.
kernel_agent() {
    local path=$1 i
    ip netns exec "$krtr" "$bin/reflectguard" run --protect 198.18.2.0/24 --protect 2001:db8:2::/64 \
        -D 'inside_ifaces={ "r1" }' -D 'outside_ifaces={ "r0" }' -D kernel_enforce=always -D "kernel_path=$path" \
        --metrics "127.0.0.1:$kernel_port" 2>"$kwork/agent-$path.log" &
    kagent=$!
    kpids+=("$kagent")
    for i in $(seq 100); do grep -q '"event":"start"' "$kwork/agent-$path.log" && break; sleep 0.1; done
    grep -q '"event":"start"' "$kwork/agent-$path.log" || { echo "bench: the agent did not start:" >&2; cat "$kwork/agent-$path.log" >&2; exit 1; }
    grep '"event":"kernel-path"' "$kwork/agent-$path.log" | sed 's/^/bench: /'
}

kernel_agent_stop() { kill "$kagent"; wait "$kagent" || true; }

# Packets the path dropped so far.
kernel_dropped() {
    if [[ $1 == xdp ]]; then
        ip netns exec "$krtr" curl -s "http://127.0.0.1:$kernel_port/metrics" \
            | awk '/^reflectguard_xdp_packets_total\{verdict="drop"/ { n += $2 } END { print n + 0 }'
    else
        ip netns exec "$krtr" nft list chain inet reflectguard always \
            | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
    fi
}

# system + irq + softirq clock ticks of cores 0 and 1, and softirq alone.
kernel_cpu() { awk '$1 == "cpu0" || $1 == "cpu1" { s += $4 + $7 + $8; si += $8 } END { print s, si }' /proc/stat; }

# Run time (ns) of ksoftirqd/0 and /1 together.
kernel_ksoftirqd() {
    local n=0 p
    for p in $(pgrep -x 'ksoftirqd/[01]'); do n=$((n + $(cut -d' ' -f1 "/proc/$p/schedstat"))); done
    echo "$n"
}

# kernel_send: the flood from the pinned sender; sets ksend_ns (its task-clock plus ksoftirqd's, ns)
# and ksend_s (wall seconds).
kernel_send() {
    local k0 k1 t0 t1 tc
    k0=$(kernel_ksoftirqd); t0=$(date +%s.%N)
    ip netns exec "$kinet" perf stat -x, -e task-clock -o "$kwork/perf.csv" -- \
        taskset -c 0 trafgen -o i0 -c "$kwork/synack.cfg" -n "$kernel_flood" -P 1 -q >/dev/null 2>&1
    t1=$(date +%s.%N); k1=$(kernel_ksoftirqd)
    tc=$(awk -F, '$3 == "task-clock" { printf "%.0f", $1 * 1e6 }' "$kwork/perf.csv")
    ksend_ns=$((tc + k1 - k0))
    ksend_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# The sender alone: r0 down, so veth_xmit drops every frame at once.
kernel_floor() {
    local tx0 tx1
    ip -n "$krtr" link set r0 down
    tx0=$(ip netns exec "$kinet" cat /sys/class/net/i0/statistics/tx_dropped)
    kernel_send
    tx1=$(ip netns exec "$kinet" cat /sys/class/net/i0/statistics/tx_dropped)
    ip -n "$krtr" link set r0 up
    sleep 1
    echo "floor 0 0 0 0 0 0 $((tx1 - tx0)) $ksend_ns" >>"$kwork/results"
    awk -v n="$ksend_ns" -v d=$((tx1 - tx0)) 'BEGIN { printf "bench: floor (r0 down): sender %d ns a frame (%d frames dropped by veth_xmit)\n", (d > 0 ? n / d : 0), d }'
}

kernel_tx() { ip netns exec "$kinet" cat /sys/class/net/i0/statistics/tx_packets; }

# run_time_ns and run_cnt of the SYN-ACK check attached to r0.
kernel_bpf_stats() {
    local id
    id=$(ip netns exec "$krtr" bpftool net show dev r0 | sed -n 's/.*id \([0-9]*\).*/\1/p' | head -1)
    [[ -n $id ]] || { echo "0 0"; return; }
    bpftool prog show id "$id" | sed -n 's/.*run_time_ns \([0-9]*\) run_cnt \([0-9]*\).*/\1 \2/p' | head -1 | grep . || echo "0 0"
}

# kernel_round PATH: one flat-out flood against PATH; appends "path pps ns_per_drop si_ns_per_drop
# dropped passed bpf_ns" to $kwork/results.
kernel_round() {
    local path=$1 hz d0 d1 c0 c1 tx0 tx1 t0 t1 b0 b1 passed
    hz=$(getconf CLK_TCK)
    kernel_agent "$path"
    ip netns exec "$kprot" nft reset counters table inet rgbench >/dev/null
    d0=$(kernel_dropped "$path"); tx0=$(kernel_tx); read -r -a c0 <<<"$(kernel_cpu)"; read -r -a b0 <<<"$(kernel_bpf_stats)"
    kernel_send
    t0=0; t1=$ksend_s
    sleep 0.3
    d1=$(kernel_dropped "$path"); tx1=$(kernel_tx); read -r -a c1 <<<"$(kernel_cpu)"; read -r -a b1 <<<"$(kernel_bpf_stats)"
    passed=$(ip netns exec "$kprot" nft list counter inet rgbench spoofed | sed -n 's/.*packets \([0-9]*\).*/\1/p')
    kernel_agent_stop
    awk -v p="$path" -v hz="$hz" -v d=$((d1 - d0)) -v tx=$((tx1 - tx0)) -v t0="$t0" -v t1="$t1" \
        -v c=$((c1[0] - c0[0])) -v si=$((c1[1] - c0[1])) -v bt=$((b1[0] - b0[0])) -v bn=$((b1[1] - b0[1])) -v ps="$passed" -v sn="$ksend_ns" 'BEGIN {
        ns = 0; sins = 0
        if (d > 0) { ns = c * 1e9 / hz / d; sins = si * 1e9 / hz / d }
        per = 0; if (bn > 0) per = bt / bn
        printf "%s %.0f %.0f %.0f %d %d %.1f %d %.0f\n", p, tx / (t1 - t0), ns, sins, d, ps, per, tx, sn }' >>"$kwork/results"
    tail -1 "$kwork/results" | awk '{ printf "bench: %-3s sender %7d pps; sender+softirq %5d ns a frame; /proc/stat sys+irq+softirq %6d ns per dropped packet (softirq %6d); dropped %d of %d sent; reached the host %d; XDP program %s ns a packet\n", $1, $2, ($8 > 0 ? $9 / $8 : 0), $3, $4, $5, $8, $6, ($1 == "xdp" ? $7 : "-") }'
}

kernel() {
    kernel_prereqs
    kernel_setup
    echo "bench: kernel: $kernel_rounds rounds of $kernel_flood forged SYN-ACKs flat out, sender pinned to core 0 (one trafgen process)"
    local r
    for r in $(seq "$kernel_rounds"); do kernel_floor; kernel_round nft; kernel_round xdp; done
    awk '
        $1 == "floor" { fn += $9; ff += $8; next }
        { n[$1]++; pps[$1] += $2; ns[$1] += $3; si[$1] += $4; bpf[$1] += $7; ps[$1] += $6; sn[$1] += $9; tx[$1] += $8 }
        END {
            floor = ff > 0 ? fn / ff : 0
            for (p in n) { pps[p] /= n[p]; ns[p] /= n[p]; si[p] /= n[p]; bpf[p] /= n[p]; gross[p] = tx[p] > 0 ? sn[p] / tx[p] : 0; net[p] = gross[p] - floor }
            printf "| path | sender pps | sender+softirq ns / frame | minus floor (%d ns): the path, ns / dropped packet | /proc/stat sys+irq+softirq ns / dropped | XDP program ns / packet (bpf_stats) | reached the host |\n", floor
            printf "|---|---|---|---|---|---|---|\n"
            printf "| nft armed | %d | %d | %d | %d | - | %d |\n", pps["nft"], gross["nft"], net["nft"], ns["nft"], ps["nft"]
            printf "| XDP armed | %d | %d | %d | %d | %.1f | %d |\n", pps["xdp"], gross["xdp"], net["xdp"], ns["xdp"], bpf["xdp"], ps["xdp"]
            if (net["nft"] > 0) printf "ratio: XDP / nft CPU per dropped packet: the path alone %.2f (target <= 0.33: %s), with the sender %.2f, /proc/stat %.2f; sender rate XDP / nft %.2f\n", net["xdp"] / net["nft"], (net["xdp"] / net["nft"] <= 0.33 ? "met" : "NOT met"), gross["xdp"] / gross["nft"], (ns["nft"] > 0 ? ns["xdp"] / ns["nft"] : 0), (pps["nft"] > 0 ? pps["xdp"] / pps["nft"] : 0)
        }' "$kwork/results"
}

# --- 1 -> 2 queues: `--queue 0:1` against `--queue 0` on the same saturation test ----------------
# The agent alone (kernel_enforce = off, no attack trigger, no backlog trigger), inside/outside
# interfaces set. Saturation as in the inline part: the agent is stopped (SIGSTOP) while
# RG_QUEUES_FILL forged SYN-ACKs from random sources fill its queue(s), then resumed and timed
# until every queue is empty: packets handled per second. Then, with the agent running, legitimate
# connections both ways: on two queues the kernel's balancing hashes (saddr, daddr)
# symmetrically, so a SYN and its SYN-ACK must reach the same engine, or the engine that sees the
# SYN-ACK without the SYN drops it as unsolicited and the connection fails. Counted per queue.
queues_fill=${RG_QUEUES_FILL:-100000}

queues_agent() {
    local spec=$1 i
    ip netns exec "$krtr" "$bin/reflectguard" run --protect 198.18.2.0/24 --protect 2001:db8:2::/64 --queue "$spec" \
        -D 'inside_ifaces={ "r1" }' -D 'outside_ifaces={ "r0" }' -D kernel_enforce=off -D kernel_path=nft \
        -D attack_rate=100000000 --overload-after 0 --queue-maxlen 65536 \
        --metrics "127.0.0.1:$kernel_port" 2>"$kwork/queues-$spec.log" &
    kagent=$!
    kpids+=("$kagent")
    for i in $(seq 100); do grep -q '"event":"start"' "$kwork/queues-$spec.log" && break; sleep 0.1; done
    grep -q '"event":"start"' "$kwork/queues-$spec.log" || { echo "bench: the agent did not start:" >&2; cat "$kwork/queues-$spec.log" >&2; exit 1; }
}

queues_waiting() { ip netns exec "$krtr" awk '{ n += $3 } END { print n + 0 }' /proc/net/netfilter/nfnetlink_queue; }
queues_metric() {
    ip netns exec "$krtr" curl -s "http://127.0.0.1:$kernel_port/metrics" | awk -v m="$1" 'index($0, m) == 1 { n += $2 } END { print n + 0 }'
}

queues_round() {
    local spec=$1 r0 r1 t0 t1 w
    queues_agent "$spec"
    r0=$(queues_metric reflectguard_packets_received_total)
    kill -STOP "$kagent"
    ip netns exec "$kinet" taskset -c 0 trafgen -o i0 -c "$kwork/synack.cfg" -n "$queues_fill" -P 1 -q >/dev/null 2>&1
    sleep 0.2
    w=$(queues_waiting)
    t0=$(date +%s.%N)
    kill -CONT "$kagent"
    while (( $(queues_waiting) > 0 )); do sleep 0.01; done
    t1=$(date +%s.%N)
    r1=$(queues_metric reflectguard_packets_received_total)
    # Legitimate connections both ways, through the engines.
    # Eight protected addresses, so the (saddr, daddr) hash spreads the pairs over both queues.
    local out_ok in_ok
    out_ok=$(ip netns exec "$kprot" python3 "$kwork/multi.py" out)
    in_ok=$(ip netns exec "$kinet" python3 "$kwork/multi.py" in)
    local per
    per=$(ip netns exec "$krtr" curl -s "http://127.0.0.1:$kernel_port/metrics" | awk '
        /^reflectguard_packets_total\{/ && /reason="(syn-tracked|solicited-synack|synack-sent|unsolicited-synack)"/ {
            match($0, /queue="[0-9]+"/); q = substr($0, RSTART + 7, RLENGTH - 8)
            match($0, /reason="[a-z-]+"/); r = substr($0, RSTART + 8, RLENGTH - 9)
            v[q " " r] += $2 }
        END { for (k in v) printf "%s=%d ", k, v[k] }')
    kernel_agent_stop
    awk -v s="$spec" -v w="$w" -v h=$((r1 - r0)) -v t0="$t0" -v t1="$t1" -v o="$out_ok" -v i="$in_ok" -v per="$per" 'BEGIN {
        printf "queues %s %d %d %.3f %.0f %s %s | %s\n", s, w, h, t1 - t0, h / (t1 - t0), o, i, per }' >>"$kwork/results"
    tail -1 "$kwork/results" | awk '{ printf "bench: --queue %-4s %6d queued, %6d handled in %6.3f s: %7d pps; legit out %s in %s; per queue: ", $2, $3, $4, $5, $6, $7, $8; for (i = 10; i <= NF; i++) printf "%s ", $i; print "" }'
}

queues() {
    kernel_prereqs
    [[ -n ${kwork:-} ]] || kernel_setup
    local h
    for h in 3 4 5 6 7 8 9; do ip -n "$kprot" addr add "198.18.2.$h/24" dev p0 2>/dev/null || true; done
    cat >"$kwork/multi.py" <<'EOF'
import socket, sys
ok = n = 0
for h in range(2, 10):
    for _ in range(5):
        n += 1
        try:
            if sys.argv[1] == "out":
                c = socket.create_connection(("198.18.1.2", 8080), 3, source_address=("198.18.2.%d" % h, 0))
            else:
                c = socket.create_connection(("198.18.2.%d" % h, 8081), 3)
            c.close(); ok += 1
        except OSError:
            pass
print("%d/%d" % (ok, n))
EOF
    ip netns exec "$kinet" python3 scripts/bench/tcp_probe.py serve 8080 & kpids+=($!)
    ip netns exec "$kprot" python3 scripts/bench/tcp_probe.py serve 8081 & kpids+=($!)
    sleep 0.5
    echo "bench: queues: $queues_fill forged SYN-ACKs from random sources pre-filled, then drained; rounds alternate --queue 0 and 0:1"
    local r
    for r in $(seq "$kernel_rounds"); do queues_round 0; queues_round 0:1; done
    awk '$1 == "queues" { n[$2]++; pps[$2] += $6 }
        END { if (n["0"] && n["0:1"]) printf "ratio: --queue 0:1 / --queue 0 handled rate %.2f (2 cores, sender idle while draining)\n", (pps["0:1"] / n["0:1"]) / (pps["0"] / n["0"]) }' "$kwork/results"
}
