# shellcheck shell=bash
# `scripts/bench.sh inline` (sourced by bench.sh, which has built the release binary into $bin):
# the inline agent against a minimal C accept-all NFQUEUE program and a Python netfilterqueue
# program doing the same SYN-ACK rule, side by side in one run, in a lab of three network
# namespaces (scripts/netns-lab.sh), plus the kernel-only rulesets for correctness.
#
# Roles: trafgen in the internet namespace forges SYN-ACKs from 198.19.0.0/16 to the
# protected host 198.18.2.2, pinned to core 0; the consumer runs in the router namespace pinned to
# core 1. The protected host counts the spoofed SYN-ACKs that reach it (nft counter before its
# stack) and drops them there, so its own RSTs never come back through the queue: every consumer
# handles exactly the flood. A router-side counter says how many entered the router.
#
# Phases, for each consumer:
#   fixed:  a flood at a fixed offered rate (RG_INLINE_RATE pps, RG_INLINE_FIXED packets) with a
#           legitimate TCP probe running: handled rate, CPU per packet, loss, latency under load;
#   drain:  saturation. The sender here cannot outrun a fast consumer (trafgen and the router's
#           forwarding share one core at ~15 us a packet), so the consumer is stopped while a
#           flood of RG_INLINE_DRAIN packets fills a long queue, then resumed and timed until the
#           queue is empty: packets verdicted per second flat out, and CPU per packet;
#   idle:   RG_INLINE_PROBES connects with no flood: added p50/p99 latency against the same rules
#           with no consumer bound (the rule's bypass accepts in the kernel).
# Correctness, no consumer or the agent with arming on: the kernel-only dynamic-set ruleset, the
# conntrack snippet, and the agent as deployed, each under the fixed flood and a full-speed one.
#
# Knobs: RG_INLINE_RATE (50000), RG_INLINE_FIXED (200000), RG_INLINE_DRAIN (60000, < 65536),
# RG_INLINE_FULL (300000), RG_INLINE_PROBES (500), RG_INLINE_ROUNDS (3, saturation rounds),
# RG_INLINE_PERF=1 (a perf profile of each saturation drain).

inline_rate=${RG_INLINE_RATE:-50000}
inline_fixed=${RG_INLINE_FIXED:-200000}
inline_drain=${RG_INLINE_DRAIN:-60000}
inline_full=${RG_INLINE_FULL:-300000}
inline_probes=${RG_INLINE_PROBES:-500}

# Sender on core 0, consumer on core 1. The machine is shared: each runs in a session (autogroup)
# of its own at nice -10, which gives it most of its core against neighbours' builds for the
# seconds a phase lasts (scripts/bench/boost.sh; RG_INLINE_NICE=0 to turn it off).
inline_nice=${RG_INLINE_NICE:--10}
inline_pin0="setsid scripts/bench/boost.sh 0 $inline_nice"
inline_pin1="setsid scripts/bench/boost.sh 1 $inline_nice"

inline_protect=(--protect 198.18.2.0/24 --protect 2001:db8:2::/64)
# Pure queue comparison: the agent judges every packet, but never arms the kernel check (the
# chain jumps to `off`), and neither attack detection nor the backlog trigger starts an nft call.
inline_agent_pure=(-D kernel_enforce=off -D attack_rate=100000000 --overload-after 0)

inline_prereqs() {
    [[ $(id -u) -eq 0 ]] || { echo "bench: inline needs root (network namespaces, NFQUEUE)" >&2; exit 1; }
    local t
    for t in ip nft iptables-nft ip6tables-nft trafgen taskset gcc python3; do
        command -v "$t" >/dev/null || { echo "bench: inline needs '$t' (scripts/setup.sh)" >&2; exit 1; }
    done
    [[ $(nproc) -ge 2 ]] || { echo "bench: inline pins sender and consumer to two cores; this machine has $(nproc)" >&2; exit 1; }
    # The peers' build dependencies, installed only when missing.
    if [[ ! -e /usr/include/libnetfilter_queue/libnetfilter_queue.h || ! -e /usr/include/libmnl/libmnl.h ]]; then
        echo "bench: apt-get install libnetfilter-queue-dev libmnl-dev"
        apt-get install -y -q libnetfilter-queue-dev libmnl-dev >/dev/null
    fi
    py=$(python3 -c 'import sys; print(sys.executable)')
    if ! "$py" -c 'import netfilterqueue' 2>/dev/null; then
        python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
            || { echo "bench: apt-get install python3-dev"; apt-get install -y -q python3-dev >/dev/null; }
        echo "bench: $py -m pip install netfilterqueue"
        "$py" -m pip install -q netfilterqueue
    fi
}

inline_setup() {
    work=$(mktemp -d /tmp/rg-bench-inline.XXXXXX)
    lab_prefix=rgb-inline-$$
    pids=()
    trap inline_cleanup EXIT
    echo "bench: gcc -O2 -Wall -o $work/nfq-accept-all scripts/bench/nfq-accept-all.c -lnetfilter_queue -lmnl"
    gcc -O2 -Wall -o "$work/nfq-accept-all" scripts/bench/nfq-accept-all.c -lnetfilter_queue -lmnl
    eval "$(RG_LAB_PREFIX=$lab_prefix scripts/netns-lab.sh up)"
    inet=$LAB_INET; rtr=$LAB_ROUTER; prot=$LAB_PROTECTED

    # Counted (and dropped) on the protected host before its stack; counted on entering the router.
    ip netns exec "$prot" nft -f - <<'EOF'
table inet rgbench {
    counter spoofed {}
    chain pre {
        type filter hook prerouting priority -400; policy accept;
        ip saddr 198.19.0.0/16 tcp flags & (syn | ack) == syn | ack counter name "spoofed" drop
    }
}
EOF
    ip netns exec "$rtr" nft -f - <<'EOF'
table inet rgbench {
    counter rx {}
    chain pre {
        type filter hook prerouting priority -400; policy accept;
        ip saddr 198.19.0.0/16 tcp flags & (syn | ack) == syn | ack counter name "rx"
    }
}
EOF
    local d s
    d=$(sed 's/\([0-9a-f][0-9a-f]\)/0x\1/g; s/:/, /g' <<<"$LAB_ROUTER_MAC")
    s=$(sed 's/\([0-9a-f][0-9a-f]\)/0x\1/g; s/:/, /g' <<<"$LAB_INET_MAC")
    # Random reflector address and ports, random sequence and acknowledgment numbers.
    cat >"$work/synack.cfg" <<EOF
{
  $d, $s, 0x08, 0x00,
  0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
  198, 19, drnd(), drnd(), 198, 18, 2, 2,
  const16(443), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp(14, 34), const16(0),
}
EOF
    ip netns exec "$inet" "$py" scripts/bench/tcp_probe.py serve 8080 &
    pids+=($!)
    results=$work/results
    : >"$results"
}

inline_cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    RG_LAB_PREFIX=$lab_prefix scripts/netns-lab.sh down || true
    echo "bench: inline raw results and logs in $work"
}

# Removes whatever ruleset the previous phase left in the router (agent rules, kernel-only).
inline_rules_clear() {
    ip netns exec "$rtr" "$bin/reflectguard" nft remove >/dev/null 2>&1 || true
    ip netns exec "$rtr" nft delete table inet reflectguard >/dev/null 2>&1 || true
    ip netns exec "$rtr" nft delete table inet reflectguard_ct >/dev/null 2>&1 || true
}

inline_rules_queue() {
    inline_rules_clear
    ip netns exec "$rtr" "$bin/reflectguard" nft apply "${inline_protect[@]}" -D kernel_enforce=off
}

inline_counters_reset() {
    ip netns exec "$prot" nft reset counters table inet rgbench >/dev/null
    ip netns exec "$rtr" nft reset counters table inet rgbench >/dev/null
}

inline_counter() { ip netns exec "$1" nft list counter inet rgbench "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }

# queue_row: "total dropped user_dropped id_sequence" of queue 0 in the router, or "0 0 0 0".
inline_queue_row() {
    ip netns exec "$rtr" awk '$1 == 0 { print $3, $6, $7, $8; found = 1 } END { if (!found) print "0 0 0 0" }' \
        /proc/net/netfilter/nfnetlink_queue
}

# inline_cpu PID: "utime stime" in clock ticks (/proc/PID/stat, the whole process) and the run time
# of all its threads in ns (schedstat: exact, where the ticks are samples). Both include the
# kernel's work in the process's system calls (reinjection, forwarding, softirqs run on exit).
inline_cpu() {
    local t=0 f
    for f in /proc/"$1"/task/*/schedstat; do t=$((t + $(cut -d' ' -f1 "$f"))); done
    echo "$(sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }') $t"
}

# inline_consumer NAME MAXLEN: starts a consumer on queue 0 in the router pinned to core 1; sets
# cpid and cout (its stdout file). The agent's log goes to $work/NAME.log.
inline_consumer() {
    local name=$1 maxlen=$2 kind=${1%%-*} pin=${consumer_pin:-$inline_pin1}
    cout=$work/$name.out
    # boost.sh writes the consumer's PID here before exec'ing it: setsid forks when it starts as a
    # process group leader (as it does under job control), and then $! is setsid's PID, not the
    # consumer's; three recorded runs failed on that.
    local pidfile=$work/$name.pid
    rm -f "$pidfile"
    export RG_PIDFILE=$pidfile
    case $name in
        agent-dry*) ip netns exec "$rtr" $pin "$bin/reflectguard" run --no-apply --dry-run "${inline_protect[@]}" \
                   "${inline_agent_pure[@]}" --queue-maxlen "$maxlen" >"$cout" 2>"$work/$name.log" & ;;
        agent*) ip netns exec "$rtr" $pin "$bin/reflectguard" run --no-apply "${inline_protect[@]}" \
                   "${inline_agent_pure[@]}" --queue-maxlen "$maxlen" >"$cout" 2>"$work/$name.log" & ;;
        armed*) ip netns exec "$rtr" $pin "$bin/reflectguard" run "${inline_protect[@]}" \
                   --queue-maxlen "$maxlen" >"$cout" 2>"$work/$name.log" & ;;
        c*)    ip netns exec "$rtr" $pin "$work/nfq-accept-all" 0 "$maxlen" $((maxlen * 2048)) 256 \
                   >"$cout" 2>"$work/$name.log" & ;;
        python*) RG_QUEUE_MAXLEN=$maxlen ip netns exec "$rtr" $pin "$py" scripts/bench/nfq_synack.py 0 \
                   198.18.2.0/24 2001:db8:2::/64 >"$cout" 2>"$work/$name.log" & ;;
    esac
    unset RG_PIDFILE
    launcher=$!
    pids+=("$launcher")
    local tries=0
    while [[ ! -s $pidfile ]] && ((tries++ < 100)); do sleep 0.05; done
    [[ -s $pidfile ]] || { echo "bench: FAIL: consumer $name did not start (no $pidfile):" >&2; cat "$work/$name.log" >&2; exit 1; }
    cpid=$(cat "$pidfile")
    pids+=("$cpid")
    local i
    for ((i = 0; i < 200; i++)); do
        if ip netns exec "$rtr" awk '$1 == 0 { f = 1 } END { exit !f }' /proc/net/netfilter/nfnetlink_queue 2>/dev/null; then
            # The agent binds before it applies rules and starts its workers.
            [[ $kind != agent && $kind != armed ]] || grep -q '"event":"start"' "$work/$name.log" || { sleep 0.05; continue; }
            sleep 0.2
            return 0
        fi
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: FAIL: consumer $name did not bind queue 0:" >&2; cat "$work/$name.log" >&2; exit 1
}

# Stops the consumer (SIGTERM, in this shell: only it can wait for its child) and sets `handled`
# to the consumer's own count of packets it verdicted.
inline_consumer_stop() {
    kill -TERM "$cpid" 2>/dev/null || true
    # The consumer may not be this shell's child (see inline_consumer): wait for it to be gone.
    local tries=0
    while kill -0 "$cpid" 2>/dev/null && ((tries++ < 200)); do sleep 0.05; done
    if kill -0 "$cpid" 2>/dev/null; then
        kill -KILL "$cpid" 2>/dev/null || true
        echo "bench: FAIL: consumer $1 did not exit within 10 s of SIGTERM" >&2; exit 1
    fi
    wait "$launcher" 2>/dev/null || true
    # Gone: keep its PID, which the system may reuse, out of the final cleanup's kill -9.
    local p kept=()
    for p in "${pids[@]}"; do [[ $p == "$cpid" ]] || kept+=("$p"); done
    pids=("${kept[@]}")
    case ${1%%-*} in
        agent|armed) handled=$(sed -n 's/.*"event":"stop".*"received":\([0-9]*\).*/\1/p' "$work/$1.log" | tail -1) ;;
        *) handled=$(sed -n 's/^handled \([0-9]*\).*/\1/p' "$cout" | tail -1) ;;
    esac
    handled=${handled:-0}
}

# inline_flood COUNT [RATE]: trafgen on core 0; sets flood_s (wall seconds).
inline_flood() {
    local count=$1 rate=${2:-} t0 t1 args=()
    [[ -n $rate ]] && args=(-b "${rate}pps")
    t0=$(date +%s%N)
    ip netns exec "$inet" $inline_pin0 trafgen -o i0 -c "$work/synack.cfg" -n "$count" -P 1 "${args[@]}" \
        >"$work/trafgen.out" 2>&1 || { echo "bench: FAIL: trafgen:" >&2; cat "$work/trafgen.out" >&2; exit 1; }
    t1=$(date +%s%N)
    flood_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
}

# inline_probe COUNT GAP_MS: legitimate connects from the protected host, in the background.
inline_probe_start() {
    ip netns exec "$prot" "$py" scripts/bench/tcp_probe.py probe 198.18.1.2 8080 "$1" "$2" >"$work/probe.out" 2>"$work/probe.err" &
    probe_pid=$!
    pids+=("$probe_pid")
}
inline_probe_wait() {
    wait "$probe_pid" || true
    read -r _ _ probe_ok _ probe_total _ probe_p50 _ probe_p99 _ < <(cat "$work/probe.out") || true
    probe_ok=${probe_ok:-0}; probe_total=${probe_total:-0}; probe_p50=${probe_p50:-0}; probe_p99=${probe_p99:-0}
}

# One row of $results: phase consumer sent rx arrived handled seconds utime_ticks stime_ticks
# run_ns queue_dropped user_dropped probe_ok probe_total p50_us p99_us
inline_record() { echo "$*" >>"$results"; }

# Fixed offered load (or full speed with RATE empty), with the probe running.
inline_fixed() {
    local name=$1 rate=$2 count=$3 phase=$4 q0 q1 c0 c1
    inline_counters_reset
    if [[ $name != none* ]]; then inline_consumer "$name" 4096; fi
    q0=$(inline_queue_row); c0=$([[ $name != none* ]] && inline_cpu "$cpid" || echo "0 0 0")
    inline_probe_start 100 20
    inline_flood "$count" "$rate"
    inline_probe_wait
    sleep 0.3
    q1=$(inline_queue_row); c1=$([[ $name != none* ]] && inline_cpu "$cpid" || echo "0 0 0")
    handled=0
    if [[ $name != none* ]]; then inline_consumer_stop "$name"; fi
    read -r _ qd0 ud0 _ <<<"$q0"; read -r _ qd1 ud1 _ <<<"$q1"
    read -r cu0 cs0 ct0 <<<"$c0"; read -r cu1 cs1 ct1 <<<"$c1"
    inline_record "$phase $name $count $(inline_counter "$rtr" rx) $(inline_counter "$prot" spoofed) ${handled:-0} $flood_s \
$((cu1 - cu0)) $((cs1 - cs0)) $((ct1 - ct0)) $((qd1 - qd0)) $((ud1 - ud0)) $probe_ok $probe_total $probe_p50 $probe_p99"
}

# Saturation: fill a stopped consumer's queue, then time the drain.
inline_drain() {
    # The kernel queues at most 65536 packets here whatever maxlen says (measured): stay below.
    local name=$1 maxlen=65536 out
    inline_counters_reset
    inline_consumer "$name" "$maxlen"
    kill -STOP "$cpid"
    inline_flood "$inline_drain"
    sleep 0.2
    # RG_INLINE_PERF=1: where the drain's time goes (kernel vs the consumer's own code), per consumer.
    local perf_pid=
    if [[ ${RG_INLINE_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
        perf record -q -o "$work/perf-$name.data" -p "$cpid" -- sleep 3 >/dev/null 2>&1 &
        perf_pid=$!
        sleep 0.5
    fi
    out=$(ip netns exec "$rtr" "$py" scripts/bench/drain.py "$cpid" 0 1 2>>"$work/drain.err")
    echo "bench: drain $name: $out; $(tail -1 "$work/drain.err")"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        echo "bench: perf profile of the $name drain (perf report -i $work/perf-$name.data):"
        perf report -i "$work/perf-$name.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -4 || true
        perf report -i "$work/perf-$name.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8 | cut -c1-110 || true
    fi
    read -r _ _ packets _ seconds _ ut _ st _ ns <<<"$out"
    q=$(inline_queue_row); read -r _ qd ud _ <<<"$q"
    inline_consumer_stop "$name"
    inline_record "drain $name $inline_drain $(inline_counter "$rtr" rx) $(inline_counter "$prot" spoofed) $packets $seconds \
$ut $st $ns $qd $ud 0 0 0 0"
}

# Latency with no flood.
inline_idle() {
    local name=$1
    inline_counters_reset
    if [[ $name != none* ]]; then inline_consumer "$name" 4096; fi
    inline_probe_start "$inline_probes" 3
    inline_probe_wait
    if [[ $name != none* ]]; then inline_consumer_stop "$name"; fi
    inline_record "idle $name 0 0 0 0 0 0 0 0 0 0 $probe_ok $probe_total $probe_p50 $probe_p99"
}

inline() {
    inline_prereqs
    inline_setup
    echo "bench: lab $lab_prefix-{inet,rtr,prot}; sender: taskset -c 0 trafgen -o i0 -P 1 [-b ${inline_rate}pps]; consumers: taskset -c 1"
    echo "bench: agent     = reflectguard run --no-apply ${inline_protect[*]} ${inline_agent_pure[*]} --queue-maxlen N"
    echo "bench: c         = nfq-accept-all 0 N N*2048 256 (FAIL_OPEN|GSO like the agent)"
    echo "bench: python    = nfq_synack.py 0 198.18.2.0/24 2001:db8:2::/64 (netfilterqueue, no FAIL_OPEN)"
    echo "bench: queue rules = reflectguard nft apply ${inline_protect[*]} -D kernel_enforce=off"
    local c
    inline_rules_queue
    inline_idle none
    # Alternating consumers per phase, so a neighbour's load hits them alike.
    for c in agent c python; do inline_idle "$c-idle"; done
    for c in agent c python; do inline_fixed "$c" "$inline_rate" "$inline_fixed" fixed; done
    # The sender flat out: beyond the C and Python programs' capacity here, so their queues fill.
    for c in agent c python; do inline_fixed "$c" "" "$inline_full" full; done
    # The agent in dry-run accepts everything, as the C program does: the same kernel work per
    # packet (every packet reinjected and forwarded), so that pair compares the userspace side alone.
    local r
    for ((r = 1; r <= ${RG_INLINE_ROUNDS:-3}; r++)); do
        for c in agent c python agent-dry; do inline_drain "$c"; done
    done

    # Correctness with enforcement: the kernel-only rulesets and the agent as deployed.
    inline_rules_clear
    ip netns exec "$rtr" "$bin/reflectguard" nft generate --kernel-only "${inline_protect[@]}" >"$work/kernel-only.nft"
    ip netns exec "$rtr" nft -f "$work/kernel-only.nft"
    inline_fixed none-kernel-set "$inline_rate" "$inline_fixed" fixed
    inline_fixed none-kernel-set "" "$inline_full" full
    inline_rules_clear
    ip netns exec "$rtr" nft -f nft/kernel-conntrack.nft
    inline_fixed none-kernel-ct "$inline_rate" "$inline_fixed" fixed
    inline_fixed none-kernel-ct "" "$inline_full" full
    inline_rules_clear
    inline_fixed armed "$inline_rate" "$inline_fixed" fixed
    inline_fixed armed "" "$inline_full" full
    # Real overload: the armed agent shares the sender's core, so it falls behind and its queue
    # fills; the backlog trigger and attack detection must arm the kernel check.
    consumer_pin=$inline_pin0 inline_fixed armed-core0 "" "$inline_full" overload
    inline_report
}

inline_report() {
    local hz
    hz=$(getconf CLK_TCK)
    awk -v hz="$hz" '
        function us(ticks, n) { return n > 0 ? ticks * 1e6 / hz / n : 0 }
        { ph = $1; c = $2; sent = $3; rx = $4; arr = $5; h = $6; s = $7; cu = $8; cs = $9; ns = $10; qd = $11; ud = $12
          ok = $13; tot = $14; p50 = $15; p99 = $16 }
        ph == "idle" { lat50[c] = p50; lat99[c] = p99; idle_ok[c] = ok; idle_tot[c] = tot; next }
        ph == "drain" { dr[c] = dr[c] " " h / s; dc[c] = dc[c] " " ns / 1e3 / h; du[c] = du[c] " " us(cu, h); dsy[c] = dsy[c] " " us(cs, h)
                        dn[c] = h; ds[c] = ds[c] " " s; next }
        { pure = (c == "agent" || c == "c" || c == "python" || c == "agent-dry")
          other = rx - h - qd - ud; if (other < 0) other = 0
          row[++k] = sprintf("%-8s %-15s %7d %7d %7d %8.1f %8.1f %7s %6d %6d %7d %7d %8.3f%% %8s %8d %8d",
              ph, c, sent, rx, h, rx / s / 1e3, h / s / 1e3, pure ? sprintf("%.2f", ns / 1e3 / h) : "-", qd, ud, other,
              arr, rx > 0 ? 100 * (rx - arr) / rx : 0, ok "/" tot, p50, p99) }
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function range(list,   a, n, i, lo, hi) {
            n = split(list, a, " "); lo = hi = a[1]
            for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
            return sprintf("%.0f-%.0f", lo / 1e3, hi / 1e3)
        }
        END {
            for (c in dr) { drate[c] = median(dr[c]); dcpu[c] = median(dc[c]); dus[c] = median(du[c]); dsys[c] = median(dsy[c]); dsec[c] = median(ds[c]); drange[c] = range(dr[c]) }
            print "Saturation (queue pre-filled while the consumer is stopped, then resumed and timed until empty):"
            printf "%-10s %8s %8s %8s %10s %11s %11s %11s %13s\n", "consumer", "packets", "seconds", "kpps", "kpps range", "cpu us/pkt", "user us/pkt", "sys us/pkt", "kpps per core"
            n = split("agent c python agent-dry", names, " ")
            for (i = 1; i <= n; i++) { c = names[i]
                printf "%-10s %8d %8.3f %8.1f %10s %11.2f %11.2f %11.2f %13.1f\n", c, dn[c], dsec[c], drate[c] / 1e3, drange[c], dcpu[c], dus[c], dsys[c], (dcpu[c] > 0 ? 1e3 / dcpu[c] : 0) }
            print "(medians of the rounds; agent-dry: the agent with --dry-run, accepting every packet like the C program)"
            print "(cpu: run time of all the consumer'"'"'s threads, schedstat; user/sys: /proc/PID/stat ticks, sampled;"
            print " kpps per core: 1 / cpu per packet, the rate one whole core would give)"
            print ""
            print "Floods (fixed: offered rate; full: sender flat out) with legitimate connects from the protected host:"
            printf "%-8s %-15s %7s %7s %7s %8s %8s %7s %6s %6s %7s %7s %9s %8s %8s %8s\n", "phase", "consumer", "sent", "rx", "handled", "rx kpps", "hd kpps", "cpu us", "qdrop", "udrop", "other", "arrived", "stopped", "legit", "p50 us", "p99 us"
            for (i = 1; i <= k; i++) print row[i]
            print "(rx: spoofed SYN-ACKs into the router; handled: the consumer'"'"'s verdicts (its own count, probe included);"
            print " qdrop/udrop: queue_dropped/user_dropped; other = rx - handled - qdrop - udrop: failed open unseen, or"
            print " dropped by a kernel rule before the queue; arrived: spoofed SYN-ACKs counted on the protected host)"
            print ""
            print "Latency, no flood (connect = SYN -> SYN-ACK round trip through the router, both queued):"
            printf "%-12s %8s %8s %9s %10s %10s\n", "consumer", "p50 us", "p99 us", "ok", "added p50", "added p99"
            n = split("none agent-idle c-idle python-idle", names, " ")
            for (i = 1; i <= n; i++) { c = names[i]
                printf "%-12s %8d %8d %9s %10d %10d\n", c, lat50[c], lat99[c], idle_ok[c] "/" idle_tot[c], lat50[c] - lat50["none"], lat99[c] - lat99["none"] }
            print ""
            r = drate["agent"] / drate["c"]; cr = dcpu["agent"] / dcpu["c"]
            printf "agent / C accept-all: handled rate %.2fx (target >= 1.2x: %s), CPU per packet %.2fx (target < 1x: %s)\n", r, (r >= 1.2 ? "met" : "NOT met"), cr, (cr < 1 ? "met" : "NOT met")
            printf "agent / Python:       handled rate %.2fx, CPU per packet %.2fx\n", drate["agent"] / drate["python"], dcpu["agent"] / dcpu["python"]
            printf "agent --dry-run / C accept-all (both accept every packet): handled rate %.2fx, CPU per packet %.2fx\n", drate["agent-dry"] / drate["c"], dcpu["agent-dry"] / dcpu["c"]
        }' "$results"
}
