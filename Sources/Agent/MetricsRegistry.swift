import NFQueue
import Synchronization
import VerdictEngine

/// Collects the workers' counters, the kernel's per-queue figures and the enforcement state into
/// Prometheus text. Runs on the metrics thread only.
final class MetricsRegistry: Sendable {
    private let workers: [WorkerFigures]
    private let enforcement: KernelEnforcement
    private let watchdog: RulesWatchdog
    private let dryRun: Bool
    private let flowspec: FlowspecEscalation?
    let kernelCounters: @Sendable () throws -> [KernelCount]
    let reloads: ReloadCounters
    let version: String
    /// The kernel counters of the last scrape that could read them.
    let lastKernelCounts = Mutex<[KernelCount]>([])
    let kernelReadFailures = CounterBlock(count: 1)

    private let conntrack: ConntrackFeed.Figures?
    private let seeds: SeedFigures?

    init(workers: [WorkerFigures], enforcement: KernelEnforcement, watchdog: RulesWatchdog, dryRun: Bool,
         flowspec: FlowspecEscalation? = nil, conntrack: ConntrackFeed.Figures? = nil,
         kernelCounters: @escaping @Sendable () throws -> [KernelCount] = { [] }, seeds: SeedFigures? = nil,
         reloads: ReloadCounters = ReloadCounters(), version: String = "unknown") {
        self.flowspec = flowspec
        self.conntrack = conntrack
        self.seeds = seeds
        self.workers = workers
        self.enforcement = enforcement
        self.watchdog = watchdog
        self.dryRun = dryRun
        self.kernelCounters = kernelCounters
        self.reloads = reloads
        self.version = version
    }

    func total(_ c: WorkerCounter) -> UInt64 {
        workers.reduce(0) { $0 &+ $1.counters.value(c.rawValue) }
    }

    /// The HELP and TYPE lines that open a metric family.
    static func family(_ name: String, _ type: String, _ help: String) -> String {
        "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    func render() -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) { out += Self.family(name, type, help) }
        func perQueue(_ name: String, _ type: String, _ help: String, _ c: WorkerCounter) {
            family(name, type, help)
            for w in workers { out += "\(name){queue=\"\(w.queue)\"} \(w.counters.value(c.rawValue))\n" }
        }

        family("reflectguard_packets_total", "counter",
               "Packets judged, by queue, verdict the engine gave and reason (in dry-run every packet was accepted).")
        for w in workers {
            for r in Reason.allCases {
                for v in [Verdict.accept, .drop] {
                    let n = w.counters.value(WorkerCounter.slot(r, v))
                    if n > 0 { out += "reflectguard_packets_total{queue=\"\(w.queue)\",verdict=\"\(v.token)\",reason=\"\(r.token)\"} \(n)\n" }
                }
            }
        }
        perQueue("reflectguard_packets_received_total", "counter", "Packets received from the queue.", .received)
        perQueue("reflectguard_verdict_accept_total", "counter", "Accept verdicts sent to the kernel.", .accepted)
        perQueue("reflectguard_verdict_drop_total", "counter", "Drop verdicts sent to the kernel.", .dropped)
        perQueue("reflectguard_would_drop_total", "counter", "Dry-run: packets the engine would have dropped.", .wouldDrop)
        perQueue("reflectguard_truncated_total", "counter", "Packets longer than the copy range (judged on their headers).", .truncated)
        perQueue("reflectguard_enobufs_total", "counter", "ENOBUFS on receive (only without NETLINK_NO_ENOBUFS).", .enobufs)
        perQueue("reflectguard_netlink_errors_total", "counter", "Netlink error messages from the kernel.", .netlinkErrors)
        perQueue("reflectguard_verdict_send_errors_total", "counter", "Verdict batches that could not be sent.", .verdictSendErrors)
        perQueue("reflectguard_lost_verdicts_total", "counter", "Verdicts whose send failed after one retry.", .lostVerdicts)
        perQueue("reflectguard_undecoded_packets_total", "counter", "Queued packets whose message did not decode; accepted unjudged.", .undecoded)
        perQueue("reflectguard_receive_calls_total", "counter", "recvmmsg system calls.", .receiveCalls)
        perQueue("reflectguard_send_calls_total", "counter", "Verdict send system calls.", .sendCalls)
        perQueue("reflectguard_attack_events_total", "counter", "Attack events the engine reported.", .attackEvents)
        perQueue("reflectguard_queue_overloads_total", "counter", "Overload reports: the queue backlogged past --overload-after, at most one a second while it lasts (each arms kernel enforcement for the protected networks).", .overloads)
        perQueue("reflectguard_syn_table_entries", "gauge", "Tracked SYNs in the engine's table.", .tableOccupancy)
        perQueue("reflectguard_syn_table_capacity", "gauge", "Capacity of the engine's SYN table.", .tableCapacity)
        perQueue("reflectguard_syn_table_evictions_total", "counter", "Tracked SYNs evicted because the table was full.", .tableEvictions)
        perQueue("reflectguard_bucket_evictions_total", "counter", "RST/backscatter token buckets evicted because their table was full.", .bucketEvictions)
        perQueue("reflectguard_attacks_active", "gauge", "Victim prefixes this queue's engine sees under attack.", .activeAttacks)
        perQueue("reflectguard_rst_attacks_started_total", "counter", "RST attacks this queue's engine started.", .rstAttacksStarted)

        let proc = QueueStatistics.read()
        let mine = Set(workers.map { $0.queue })
        let rows = proc.filter { mine.contains($0.queue) }
        family("reflectguard_queue_waiting", "gauge", "Packets waiting in the kernel queue (/proc queue_total).")
        for r in rows { out += "reflectguard_queue_waiting{queue=\"\(r.queue)\"} \(r.queueTotal)\n" }
        family("reflectguard_queue_dropped_total", "counter",
               "Packets the full queue did not hold (/proc queue_dropped; accepted unseen with FAIL_OPEN).")
        for r in rows { out += "reflectguard_queue_dropped_total{queue=\"\(r.queue)\"} \(r.queueDropped)\n" }
        family("reflectguard_queue_user_dropped_total", "counter", "Packets lost in netlink: socket buffer full (/proc user_dropped).")
        for r in rows { out += "reflectguard_queue_user_dropped_total{queue=\"\(r.queue)\"} \(r.userDropped)\n" }
        // A gauge: the kernel's packet id wraps at 2^32, and a counter must end in _total.
        family("reflectguard_queue_id_sequence", "gauge", "Last packet id the kernel gave out (/proc id_sequence; wraps at 2^32).")
        for r in rows { out += "reflectguard_queue_id_sequence{queue=\"\(r.queue)\"} \(r.idSequence)\n" }

        if let conntrack { out += renderConntrack(conntrack) }
        if let seeds {
            out += Self.single("reflectguard_ct_seed_successful", "gauge",
                               "1 when the conntrack table was read at start to seed established flows; 0 when it could not be (flows older than the agent unknown until they send).",
                               seeds.successful ? 1 : 0)
            out += Self.single("reflectguard_ct_seeded_flows", "gauge",
                               "Established TCP flows with a protected end seeded into the engines at start from the conntrack table.", seeds.seeded)
            out += Self.single("reflectguard_ct_seed_capped_flows", "gauge",
                               "Established flows left unseeded at start because the cap (a quarter of syn_table_size) was reached.", seeds.capped)
        }
        // The agent's one-sample families, in this order: (name, type, help, value).
        let singles: [(String, String, String, any CustomStringConvertible)] = [
            ("reflectguard_arming_refused_total", "counter", "Arm requests refused because the armed check would rely on state this router cannot see (ingress-only with state local).",
             enforcement.armRefusals.load(ordering: .relaxed)),
            ("reflectguard_victims_armed", "gauge", "Victim prefixes with kernel enforcement armed.",
             enforcement.armedNow.load(ordering: .relaxed)),
            ("reflectguard_victims_under_attack", "gauge", "Victim prefixes some engine reports under attack.",
             enforcement.attacksNow.load(ordering: .relaxed)),
            ("reflectguard_rst_attacks_active", "gauge", "Victim prefixes and protected networks some engine reports under an RST attack (untracked RSTs held to their baseline).",
             enforcement.rstAttacksNow.load(ordering: .relaxed)),
            ("reflectguard_rst_armed", "gauge", "Prefixes whose RST attack outgrew the queue, with the kernel's RST meter armed for them.",
             enforcement.rstArmedNow.load(ordering: .relaxed)),
            ("reflectguard_arm_operations_total", "counter", "Additions or renewals of armed victim prefixes.",
             enforcement.armOperations.load(ordering: .relaxed)),
            ("reflectguard_arm_failures_total", "counter", "Failed arming attempts.",
             enforcement.armFailures.load(ordering: .relaxed)),
            ("reflectguard_arm_latency_seconds", "gauge", "Last time from attack report to the kernel set holding the prefix.",
             Double(enforcement.lastArmLatencyNanoseconds.load(ordering: .relaxed)) / 1e9),
            ("reflectguard_rules_present", "gauge", "1 while the agent's table and queue rules are in the kernel (checked every 0.5 s).",
             watchdog.present.load(ordering: .relaxed)),
            ("reflectguard_rules_checks_total", "counter", "Checks whether the rules are still in the kernel.",
             watchdog.checks.load(ordering: .relaxed)),
            ("reflectguard_rules_reapplied_total", "counter", "Times the rules were found gone (nft flush ruleset, say) and applied again.",
             watchdog.reapplied.load(ordering: .relaxed)),
            ("reflectguard_rules_reapply_failures_total", "counter", "Failed attempts to apply the missing rules again.",
             watchdog.reapplyFailures.load(ordering: .relaxed)),
            ("reflectguard_log_lines_dropped_total", "counter", "Log lines lost because stderr was closed or its reader gone.",
             Logger.droppedLines.load(ordering: .relaxed)),
            ("reflectguard_dry_run", "gauge", "1 when every packet is accepted and verdicts are only scored.",
             dryRun ? 1 : 0),
        ]
        for (name, type, help, value) in singles { out += Self.single(name, type, help, value) }
        if let flowspec { out += flowspec.renderMetrics() }
        out += renderKernel()
        out += renderLifecycle()
        return out
    }

    /// `state = conntrack`: the feed, replication health and the held SYN-ACKs.
    private func renderConntrack(_ feed: ConntrackFeed.Figures) -> String {
        var out = ""
        out += Self.single("reflectguard_ct_events_total", "counter", "ctnetlink messages read (events and dump replies).",
               feed.counts[.events])
        out += Self.single("reflectguard_ct_facts_total", "counter", "Conntrack facts of TCP flows with a protected end handed to the engines.",
               feed.counts[.facts])
        out += Self.single("reflectguard_ct_enobufs_total", "counter", "Conntrack events lost (ENOBUFS on the event socket); each starts a re-dump.",
               feed.counts[.overruns])
        out += Self.single("reflectguard_ct_dumps_total", "counter", "Whole conntrack table dumps read (start and after event losses).",
               feed.counts[.dumps])
        out += Self.single("reflectguard_ct_dump_failures_total", "counter", "Conntrack dumps that failed.", feed.counts[.dumpFailures])
        out += Self.single("reflectguard_ct_malformed_total", "counter", "ctnetlink messages that did not parse.", feed.counts[.malformed])
        out += Self.single("reflectguard_ct_replication_healthy", "gauge",
               "1 while replicated conntrack state arrives; 0 while stalled (SYN-ACKs without state get ct_miss).",
               feed.replicationHealthy ? 1 : 0)
        out += Self.single("reflectguard_ct_replication_stalls_total", "counter", "Times replication was found stalled.",
               feed.counts[.stalls])
        func perQueue(_ name: String, _ type: String, _ help: String, _ c: HoldCounter) {
            out += Self.family(name, type, help)
            for w in workers { out += "\(name){queue=\"\(w.queue)\"} \(w.holdCounters.value(c.rawValue))\n" }
        }
        perQueue("reflectguard_ct_held_total", "counter", "SYN-ACKs held for their conntrack state (ct_wait).", .held)
        perQueue("reflectguard_ct_held_matched_total", "counter", "Held SYN-ACKs whose state arrived while they waited (accepted).", .matched)
        perQueue("reflectguard_ct_held_expired_total", "counter", "Held SYN-ACKs whose wait ended without state.", .expired)
        perQueue("reflectguard_ct_held_budget_total", "counter", "Held SYN-ACKs judged early because the holding budget was full.", .budget)
        perQueue("reflectguard_ct_held", "gauge", "SYN-ACKs held now.", .holding)
        perQueue("reflectguard_ct_entries", "gauge", "Conntrack entries mirrored by the queue's engine.", .entries)
        perQueue("reflectguard_ct_entry_evictions_total", "counter", "Mirrored conntrack entries evicted for room.", .evictions)
        perQueue("reflectguard_ct_mailbox_dropped_total", "counter", "Conntrack facts lost because the worker fell behind.", .mailboxDropped)
        out += Self.family("reflectguard_ct_wait_seconds", "histogram", "How long held SYN-ACKs waited before their verdict.")
        for w in workers {
            var cumulative: UInt64 = 0
            var count: UInt64 = 0
            for i in 0...HoldCounter.waitBuckets.count { count &+= w.holdCounters.value(HoldCounter.bucketBase + i) }
            for (i, le) in HoldCounter.waitBuckets.enumerated() {
                cumulative &+= w.holdCounters.value(HoldCounter.bucketBase + i)
                out += "reflectguard_ct_wait_seconds_bucket{queue=\"\(w.queue)\",le=\"\(le)\"} \(cumulative)\n"
            }
            out += "reflectguard_ct_wait_seconds_bucket{queue=\"\(w.queue)\",le=\"+Inf\"} \(count)\n"
            out += "reflectguard_ct_wait_seconds_sum{queue=\"\(w.queue)\"} \(Double(w.holdCounters.value(HoldCounter.waitSumNanoseconds.rawValue)) / 1e9)\n"
            out += "reflectguard_ct_wait_seconds_count{queue=\"\(w.queue)\"} \(count)\n"
        }
        return out
    }


}
