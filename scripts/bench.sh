#!/usr/bin/env bash
# Benchmarks (release build only: debug figures mean nothing).
#   scripts/bench.sh parser   SIMD fast path vs scalar reference parser, Mpps per core
#   scripts/bench.sh engine   parse + verdict Mpps per core, bytes per tracked SYN, RSS with 1M SYNs
#   scripts/bench.sh score    reflectguard score on a generated 5M-frame capture vs tcpdump + BPF vs tshark;
#                             the same capture as pcapng, .gz and .zst; the readers' peak memory
#   scripts/bench.sh memory   RSS with 1M tracked SYNs; RSS and legit verdicts under 10M spoofed tuples
#   scripts/bench.sh inline   in a netns lab: the agent vs a C accept-all and a Python netfilterqueue
#                             program (rate, CPU per packet, loss, latency), kernel-only rulesets
#   scripts/bench.sh kernel   in a netns lab: the armed kernel path, nft against XDP (kernel_path), CPU
#                             per dropped packet and the pinned sender's rate; the agent on --queue 0:1
#                             against --queue 0 (saturation drain rate, flows per engine)
#   scripts/bench.sh all      every benchmark
# Set SCRATCH to build elsewhere than .build (e.g. SCRATCH=/tmp/rg-me).
# --record (anywhere on the line) or RG_BENCH_RECORD=1: also rewrite the block between the
# bench-run markers at the top of BENCHMARKS.md with this run's date, machine, load, command and
# what each part printed, so the recorded figures come from one dated run and not from memory.
# Each part runs in a subshell with its output teed to a log: a failed part is reported (and
# recorded) as failed and the following parts still run; the exit status says whether any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

bench_cmd="scripts/bench.sh $*"
record=${RG_BENCH_RECORD:-0}
args=()
for a in "$@"; do if [[ $a == --record ]]; then record=1; else args+=("$a"); fi; done
what=${args[0]:-all}

scratch=(); bin=.build/release
if [[ -n "${SCRATCH:-}" ]]; then scratch=(--scratch-path "$SCRATCH"); bin="$SCRATCH/release"; fi

build() {
    echo "bench: building release (swift build -c release --product reflectguard-bench)"
    swift build -c release "${scratch[@]}" --product reflectguard-bench
}

machine() {
    echo "bench: $(date -u '+%Y-%m-%d %H:%M UTC'); $(uname -srm); $(lscpu | sed -n 's/^Model name: *//p'); load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# The fast path relies on vector compares in its SIMD-specialised functions (FastPath.parse and
# whatever the compiler specialised for SIMDClassifier); Swift silently falls back to scalar loops
# for some SIMD spellings, so check the binary itself, and that no lane is spilled to
# the stack and masked one byte at a time (the pattern 6.3 produced for a 16-lane AND).
check_parser_simd() {
    command -v objdump >/dev/null || { echo "bench: objdump missing (apt-get install binutils); SIMD check skipped"; return 0; }
    local asm
    asm=$(objdump -d --no-show-raw-insn "$bin/reflectguard-bench" | awk '
        /^[0-9a-f]+ <.*>:$/ { f = ($2 ~ /8FastPathO5parse_5count/ || ($2 ~ /8FastPath/ && $2 ~ /SIMDClassifier/)) ; next }
        /^$/ { f = 0 }
        f')
    local ok=1
    for insn in pand pcmpeqb pmovmskb; do
        local n; n=$(grep -cw "$insn" <<<"$asm" || true)
        echo "bench: SIMD fast path has $n x $insn"
        [[ $n -gt 0 ]] || ok=0
    done
    [[ $ok == 1 ]] || { echo "bench: FAIL: the SIMD fast path was compiled without vector compares" >&2; exit 1; }
}

parser() {
    check_parser_simd
    "$bin/reflectguard-bench" parser
}

# The engine's table probes rely on one pcmpeqb + pmovmskb per tag group (inlined into the
# decision functions).
check_engine_simd() {
    command -v objdump >/dev/null || { echo "bench: objdump missing (apt-get install binutils); SIMD check skipped"; return 0; }
    local dis ok=1 n
    dis=$(objdump -d --no-show-raw-insn "$bin/reflectguard-bench")
    for insn in pcmpeqb pmovmskb; do
        n=$(awk '/^[0-9a-f]+ <\$s13VerdictEngine0B0C(13inboundSynack|11outboundSyn)/ {f=1; next} /^$/ {f=0} f' <<<"$dis" | grep -c "$insn" || true)
        echo "bench: Engine SYN/SYN-ACK paths have $n x $insn"
        [[ $n -gt 0 ]] || ok=0
    done
    [[ $ok == 1 ]] || { echo "bench: FAIL: the engine's table probes lost their vector compares" >&2; exit 1; }
}

engine() {
    check_engine_simd
    "$bin/reflectguard-bench" engine
}

# --- score: `reflectguard score` (full stateful scoring) vs tcpdump + BPF vs tshark -------------
# One generated capture, cached in /tmp by its parameters and a hash of the generator's sources.
# Runs alternate (rg, tcpdump, rg, tcpdump, …) so a neighbour's load hits both alike; the table
# gives medians and ratios. RG_SCORE_PACKETS (default 5000000), RG_SCORE_ROUNDS (default 3),
# RG_TSHARK_FRAMES (default 1000000: tshark dissects every frame fully, so it runs on a subset of
# the capture, and rg and tcpdump run on the same subset for its ratios), RG_SCORE_PERF=1 (add a
# perf profile of reflectguard by function), RG_SCORE_BASELINE=PATH (another reflectguard binary,
# e.g. the main branch built at a scratch path: its runs alternate with this one's as rg-before
# and rg-1t-before, its reports must equal this one's, and a line gives after/before ratios).
build_cli() {
    echo "bench: building release (swift build -c release --product reflectguard)"
    swift build -c release "${scratch[@]}" --product reflectguard
}

score_capture() {
    local packets=${RG_SCORE_PACKETS:-5000000} tag
    tag=$(cat Sources/Lab/*.swift | sha1sum | cut -c1-8)
    cap=/tmp/rg-bench-mixed-p$packets-snap128-seed1-$tag.pcap
    if [[ ! -s $cap ]]; then
        rm -f /tmp/rg-bench-mixed-p"$packets"-snap128-seed1-*.pcap /tmp/rg-bench-mixed-p"$packets"-snap128-seed1-*.sub*.pcap
        echo "bench: $bin/reflectguard lab gen --scenario mixed --packets $packets --snaplen 128 --seed 1 --out $cap"
        "$bin/reflectguard" lab gen --scenario mixed --packets "$packets" --snaplen 128 --seed 1 --out "$cap.tmp"
        mv "$cap.tmp" "$cap"
    fi
    frames=$(capinfos -Mc "$cap" | awk -F': *' '/Number of packets/ {print $2}')
    sub_frames=$(( ${RG_TSHARK_FRAMES:-1000000} < frames ? ${RG_TSHARK_FRAMES:-1000000} : frames ))
    sub=${cap%.pcap}.sub$sub_frames.pcap
    [[ -s $sub ]] || editcap -r "$cap" "$sub" "1-$sub_frames"
    # Page cache warm for everyone: the figures are about packet work, not the disk.
    cat "$cap" "$sub" >/dev/null
    echo "bench: capture $cap: $frames frames, $(du -m "$cap" | cut -f1) MB; tshark subset $sub: $sub_frames frames"
    # The same capture as operators keep it: pcapng (editcap), gzip and zstd (default levels).
    ng=${cap%.pcap}.pcapng
    [[ -s $ng ]] || { editcap -F pcapng "$cap" "$ng.tmp" && mv "$ng.tmp" "$ng"; }
    [[ -s $cap.gz ]] || { gzip -c "$cap" >"$cap.gz.tmp" && mv "$cap.gz.tmp" "$cap.gz"; }
    [[ -s $cap.zst ]] || { zstd -q -c "$cap" >"$cap.zst.tmp" && mv "$cap.zst.tmp" "$cap.zst"; }
    [[ -s $sub.xz ]] || { xz -T2 -c "$sub" >"$sub.xz.tmp" && mv "$sub.xz.tmp" "$sub.xz"; }
    cat "$ng" "$cap.gz" "$cap.zst" >/dev/null
    echo "bench: forms: $ng $(du -m "$ng" | cut -f1) MB, $cap.gz $(du -m "$cap.gz" | cut -f1) MB, $cap.zst $(du -m "$cap.zst" | cut -f1) MB, $sub.xz $(du -m "$sub.xz" | cut -f1) MB"
}

# timed NAME FRAMES CMD...: one run under /usr/bin/time; appends "NAME FRAMES wall user sys maxrss_kib"
# to $times. stdout of CMD goes to $out_dir/NAME.out.
timed() {
    local name=$1 n=$2; shift 2
    /usr/bin/time -f '%e %U %S %M' -o "$out_dir/time" "$@" >"$out_dir/$name.out" 2>"$out_dir/$name.err" \
        || { echo "bench: FAIL: $name exited non-zero:" >&2; cat "$out_dir/$name.err" >&2; exit 1; }
    echo "$name $n $(tail -1 "$out_dir/time")" >>"$times"
}

score() {
    score_capture
    out_dir=$(mktemp -d /tmp/rg-bench-score.XXXXXX); times=$out_dir/times
    local protect=(--protect 198.18.2.0/24 --protect 2001:db8:2::/64)
    local bpf='tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)'
    local rounds=${RG_SCORE_ROUNDS:-3} baseline=${RG_SCORE_BASELINE:-}
    [[ -z $baseline || -x $baseline ]] || { echo "bench: FAIL: RG_SCORE_BASELINE=$baseline is not executable" >&2; exit 1; }
    echo "bench: rg      = $bin/reflectguard score CAPTURE ${protect[*]} --format json (two threads when the process may use two CPUs; nproc here: $(nproc))"
    echo "bench: rg-1t   = the same with --threads 1"
    echo "bench: rg-pcapng, rg-gz, rg-zst = the same on the capture as pcapng, gzip and zstd"
    echo "bench: mem-*   = the readers alone (--filter matching no frame, so nothing is scored): peak memory by size and form"
    echo "bench: tcpdump = tcpdump -r CAPTURE -w /dev/null '$bpf'"
    echo "bench: tshark  = tshark -n -r SUBSET -o ip.defragment:FALSE -o ipv6.defragment:FALSE -o tcp.desegment_tcp_streams:FALSE -Y 'tcp.flags.syn==1 && tcp.flags.ack==1' -T fields -e frame.number | wc -l"
    [[ -z $baseline ]] || echo "bench: rg-before, rg-1t-before = rg and rg-1t with the baseline $baseline"
    for ((r = 1; r <= rounds; r++)); do
        timed rg "$frames" "$bin/reflectguard" score "$cap" "${protect[@]}" --format json
        [[ -z $baseline ]] || timed rg-before "$frames" "$baseline" score "$cap" "${protect[@]}" --format json
        timed tcpdump "$frames" tcpdump -r "$cap" -w /dev/null "$bpf"
        timed rg-1t "$frames" "$bin/reflectguard" score "$cap" "${protect[@]}" --format json --threads 1
        [[ -z $baseline ]] || timed rg-1t-before "$frames" "$baseline" score "$cap" "${protect[@]}" --format json --threads 1
        timed rg-pcapng "$frames" "$bin/reflectguard" score "$ng" "${protect[@]}" --format json
        timed rg-gz "$frames" "$bin/reflectguard" score "$cap.gz" "${protect[@]}" --format json
        timed rg-zst "$frames" "$bin/reflectguard" score "$cap.zst" "${protect[@]}" --format json
    done
    # Peak memory of the readers: no frame matches the filter, so the pipeline's tables stay empty
    # and what is left is the reading (buffers, decompressors): the same for 1M and 5M frames.
    local none='host 192.0.2.254'
    timed mem-pcap-1M "$sub_frames" "$bin/reflectguard" score "$sub" --filter "$none" --format json
    timed mem-pcap-5M "$frames" "$bin/reflectguard" score "$cap" --filter "$none" --format json
    timed mem-pcapng-5M "$frames" "$bin/reflectguard" score "$ng" --filter "$none" --format json
    timed mem-gz-5M "$frames" "$bin/reflectguard" score "$cap.gz" --filter "$none" --format json
    timed mem-zst-5M "$frames" "$bin/reflectguard" score "$cap.zst" --filter "$none" --format json
    timed mem-xz-1M "$sub_frames" "$bin/reflectguard" score "$sub.xz" --filter "$none" --format json
    # The subset: all three, alternating, once (tshark alone takes most of a minute).
    timed rg-subset "$sub_frames" "$bin/reflectguard" score "$sub" "${protect[@]}" --format json
    timed tcpdump-subset "$sub_frames" tcpdump -r "$sub" -w /dev/null "$bpf"
    timed tshark-subset "$sub_frames" sh -c "tshark -n -r '$sub' -o ip.defragment:FALSE -o ipv6.defragment:FALSE \
        -o tcp.desegment_tcp_streams:FALSE -Y 'tcp.flags.syn==1 && tcp.flags.ack==1' -T fields -e frame.number | wc -l"

    # Same question, same answer: SYN-ACK counts on the subset (tcpdump's tcp[] indexes untagged
    # IPv4 only, so it sees fewer; that is part of why it does "far less").
    local rg_synack ts_synack td_synack rg_frames
    rg_synack=$(jq .packets.synack "$out_dir/rg-subset.out")
    rg_frames=$(jq .packets.frames "$out_dir/rg.out")
    ts_synack=$(tr -d ' ' <"$out_dir/tshark-subset.out")
    td_synack=$(tcpdump -nr "$sub" "$bpf" 2>/dev/null | wc -l)
    echo "bench: SYN-ACKs in the subset: reflectguard $rg_synack, tshark $ts_synack, tcpdump's BPF $td_synack; reflectguard frames on the full capture $rg_frames of $frames"
    [[ $rg_frames == "$frames" ]] || { echo "bench: FAIL: reflectguard scored $rg_frames frames, the capture has $frames" >&2; exit 1; }
    cmp -s "$out_dir/rg.out" "$out_dir/rg-1t.out" || { echo "bench: FAIL: --threads 1 and the default gave different reports" >&2; exit 1; }
    if [[ -n $baseline ]]; then
        cmp -s "$out_dir/rg.out" "$out_dir/rg-before.out" || { echo "bench: FAIL: the baseline gave another report" >&2; exit 1; }
        echo "bench: the baseline's report is byte for byte this build's"
    fi
    local form
    for form in pcapng gz zst; do
        cmp -s <(grep -v '"source"' "$out_dir/rg.out") <(grep -v '"source"' "$out_dir/rg-$form.out") \
            || { echo "bench: FAIL: the $form capture gave another report than the pcap" >&2; exit 1; }
    done
    [[ $rg_synack == "$ts_synack" ]] || echo "bench: WARNING: reflectguard and tshark disagree on the SYN-ACK count" >&2
    echo "bench: reflectguard verdicts on the full capture: $(jq -c .verdicts "$out_dir/rg.out"), sessions $(jq .sessions.total "$out_dir/rg.out")"

    # Medians per tool; ratios against reflectguard (>1: reflectguard is that many times faster).
    awk -v rounds="$rounds" '
        function median(list,   a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        { wall[$1] = wall[$1] " " $3; cpu[$1] = cpu[$1] " " ($4 + $5); n[$1] = $2
          if (!($1 in lo) || $3 < lo[$1]) lo[$1] = $3; if ($3 > hi[$1]) hi[$1] = $3
          if ($6 > rss[$1]) rss[$1] = $6; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
        END {
            printf "%-15s %9s %5s %9s %13s %9s %9s %12s %11s %11s\n", "tool", "frames", "runs", "wall s", "wall min-max", "cpu s", "peak MiB", "Mpps (wall)", "wall / rg", "cpu / rg"
            for (i = 1; i <= k; i++) {
                t = order[i]; w = median(wall[t]); c = median(cpu[t]); runs = split(wall[t], x, " ")
                base = (t ~ /-subset$|-1M$/) ? "rg-subset" : "rg"
                bw = median(wall[base]); bc = median(cpu[base])
                printf "%-15s %9d %5d %9.2f %6.2f-%-6.2f %9.2f %9.1f %12.2f %10.2fx %10.2fx\n", t, n[t], runs, w, lo[t], hi[t], c, rss[t] / 1024, n[t] / w / 1e6, w / bw, c / bc
                mw[t] = w; mc[t] = c
            }
            if ("rg-before" in mw)
                printf "baseline ratio (after / before, medians of %d alternating runs): two threads wall %.3f, cpu %.3f; one thread wall %.3f, cpu %.3f\n", rounds,
                    mw["rg"] / mw["rg-before"], mc["rg"] / mc["rg-before"], mw["rg-1t"] / mw["rg-1t-before"], mc["rg-1t"] / mc["rg-1t-before"]
            printf "score target (reflectguard faster than the tcpdump run, medians of %d): wall %s (reflectguard takes %.2fx tcpdump'"'"'s), CPU %s (%.2fx; one thread: %.2fx)\n", rounds,
                mw["rg"] < mw["tcpdump"] ? "met" : "NOT met", mw["rg"] / mw["tcpdump"],
                mc["rg"] < mc["tcpdump"] ? "met" : "NOT met", mc["rg"] / mc["tcpdump"], mc["rg-1t"] / mc["tcpdump"]
            printf "tshark on the full capture, scaled from the subset: ~%.0f s\n", mw["tshark-subset"] * n["rg"] / n["tshark-subset"]
        }' "$times"
    echo "bench: raw runs in $times"
    # RG_SCORE_PERF=1: where reflectguard's time goes on the full capture, by function.
    if [[ ${RG_SCORE_PERF:-0} == 1 ]] && command -v perf >/dev/null; then
        perf record -q -o "$out_dir/perf.data" "$bin/reflectguard" score "$cap" "${protect[@]}" --format json >/dev/null 2>&1 \
            && perf report -i "$out_dir/perf.data" --no-children --stdio --sort dso,sym 2>/dev/null \
                | grep -v '^[#]' | grep -v '^$' | cut -c1-160 | sed -n 1,25p || true
    fi
}

# --- memory: resident size with 1M tracked SYNs; RSS and legit verdicts under 10M spoofed tuples --
memory() {
    "$bin/reflectguard-bench" memory
}

# --- running parts and recording them ----------------------------------------------------------
run_dir=$(mktemp -d /tmp/rg-bench-run.XXXXXX)
run_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC'); run_load=$(cut -d' ' -f1-3 /proc/loadavg)
# The tree as it is built, at the start (others may commit while the parts run).
run_commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- Sources scripts Package.swift 2>/dev/null || echo ' + uncommitted changes in Sources/scripts')"
parts_run=(); parts_failed=()

# run_part NAME FUNCTION: the function in a subshell (so a part's `exit 1` or a set -e failure
# ends that part only, and inline's EXIT trap cleans its lab up when the part ends), stdout and
# stderr teed to $run_dir/NAME.log; the exit status goes to $run_dir/NAME.rc.
run_part() {
    local name=$1 fn=$2 rc
    parts_run+=("$name")
    # A part after a failed build would measure a stale binary, or none.
    if [[ " ${parts_failed[*]} " == *" build "* ]]; then
        echo "bench: $name not run: the build failed" | tee "$run_dir/$name.log"; echo 125 >"$run_dir/$name.rc"
        parts_failed+=("$name"); return 0
    fi
    set +e
    ( set -e; "$fn" ) 2>&1 | tee "$run_dir/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    echo "$rc" >"$run_dir/$name.rc"
    if [[ $rc != 0 ]]; then echo "bench: FAIL: part $name exited $rc" >&2; parts_failed+=("$name"); fi
}

build_all() { build; build_cli; }
inline_part() { source scripts/bench/inline.sh; inline; }
kernel_part() { source scripts/bench/kernel.sh; kernel; queues; }

# The lines of a part's log worth keeping: ratio and target lines first, then the tables and
# result lines the part printed (not its "bench:" narration, except failures, warnings and the
# few narration lines that carry a result), at most 60; a failed part also gets its last lines.
record_lines() {
    local log=$1 rc=$2 key='ratio:|target|/ C accept-all:|/ Python:'
    { grep -E "$key" "$log" || true
      grep -Ev "$key" "$log" | grep -Ev '^bench: ' || true
      grep -E '^bench: (.*FAIL:|.*WARNING|SIMD|Engine SYN|SYN-ACKs in the subset|reflectguard verdicts|capture )' "$log" || true
    } | grep -Ev '^\[[0-9]+/[0-9]+\]|^Build complete|^Building for|^Compiling|^Write swift|^$' | head -60
    if [[ $rc != 0 ]]; then echo "--- last lines of the failed part:"; tail -15 "$log"; fi
}

record_run() {
    local block=$run_dir/block.md name rc status
    {
        echo "<!-- bench-run:begin (written by \`scripts/bench.sh ... --record\`; rewritten on every recorded run) -->"
        echo "## Recorded run: $run_start"
        echo
        echo "- date (UTC): $run_start to $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- machine: $(uname -srm); $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores; $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
        echo "- kernel: $(uname -rv)"
        echo "- load average at start: $run_load (at end: $(cut -d' ' -f1-3 /proc/loadavg))"
        echo "- commit: $run_commit (at the start of the run)"
        echo "- command: \`$bench_cmd\`${SCRATCH:+ (SCRATCH=$SCRATCH)}"
        status=""
        for name in "${parts_run[@]}"; do
            rc=$(cat "$run_dir/$name.rc")
            status+="${status:+, }$name $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")"
        done
        echo "- parts: $status"
        echo "- full logs: $run_dir (not kept in the repository)"
        for name in "${parts_run[@]}"; do
            [[ $name == build ]] && [[ $(cat "$run_dir/$name.rc") == 0 ]] && continue
            rc=$(cat "$run_dir/$name.rc")
            echo
            echo "### $name$([[ $rc == 0 ]] || echo " (FAILED, exit $rc)")"
            echo
            echo '```'
            record_lines "$run_dir/$name.log" "$rc"
            echo '```'
        done
        echo "<!-- bench-run:end -->"
    } >"$block"
    # Replace the old block; without one, put it above the first section.
    awk -v block="$block" '
        function put(   l) { while ((getline l < block) > 0) print l; close(block); done = 1 }
        /^<!-- bench-run:begin/ { put(); skip = 1; next }
        skip && /^<!-- bench-run:end/ { skip = 0; next }
        skip { next }
        !done && /^## / { put(); print "" }
        { print }' BENCHMARKS.md >"$run_dir/BENCHMARKS.md"
    cp "$run_dir/BENCHMARKS.md" BENCHMARKS.md
    echo "bench: recorded this run at the top of BENCHMARKS.md (logs in $run_dir)"
}

case "$what" in
    parser) run_part build build; machine; run_part parser parser ;;
    engine) run_part build build; machine; run_part engine engine ;;
    score)  run_part build build_cli; machine; run_part score score ;;
    memory) run_part build build; machine; run_part memory memory ;;
    inline) run_part build build_cli; machine; run_part inline inline_part ;;
    kernel) run_part build build_cli; machine; run_part kernel kernel_part ;;
    all)    run_part build build_all; machine
            for p in parser engine score memory; do run_part "$p" "$p"; done
            run_part inline inline_part
            run_part kernel kernel_part ;;
    *) echo "Usage: scripts/bench.sh parser|engine|score|memory|inline|kernel|all [--record]" >&2; exit 2 ;;
esac
if [[ $record == 1 ]]; then record_run; fi
if [[ ${#parts_failed[@]} -gt 0 ]]; then echo "bench: failed parts: ${parts_failed[*]}" >&2; exit 1; fi
