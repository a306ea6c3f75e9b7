import Dispatch
import NFQueue
import Synchronization
import VerdictEngine

/// Arms kernel enforcement for victim prefixes the engines report under attack: the prefix goes
/// into the ruleset's armed set with a timeout, and from then on the kernel's conntrack-free check
/// sheds that flood at line rate, even the part that overflows the queue (which FAIL_OPEN would
/// otherwise accept unseen). Runs on its own serial queue so a worker never waits for netlink;
/// while an attack lasts the entry is renewed before its timeout, and after the attack ends it is
/// left to run out (a flood that pauses and resumes stays shed).
final class KernelEnforcement: @unchecked Sendable {
    private let queue = DispatchQueue(label: "reflectguard.enforcement")
    private let logger: Logger
    private let timeout: Double
    private let queueCount: Int
    private let arm: @Sendable (CIDR, Double, Bool) throws -> Void
    /// Touched on `queue` only: prefix → when its kernel entry runs out (monotonic ns), and the
    /// queues whose engines currently report an attack on it.
    private var armed: [CIDR: Int64] = [:]
    private var attacked: [CIDR: (queues: Set<UInt16>, since: Int64)] = [:]
    private var renewTimer: DispatchSourceTimer?

    let armOperations = Atomic<UInt64>(0)
    let armFailures = Atomic<UInt64>(0)
    let armedNow = Atomic<UInt64>(0)
    let attacksNow = Atomic<UInt64>(0)
    /// Time from the engine's report reaching us to the kernel set holding the prefix, last one.
    let lastArmLatencyNanoseconds = Atomic<UInt64>(0)

    /// Dry-run: attacks are reported, nothing is armed (the kernel's verdicts stay untouched too).
    private let dryRun: Bool

    init(logger: Logger, timeout: Double, queueCount: Int, dryRun: Bool,
         arm: @escaping @Sendable (CIDR, Double, Bool) throws -> Void) {
        self.dryRun = dryRun
        self.logger = logger
        self.timeout = timeout
        self.queueCount = queueCount
        self.arm = arm
    }

    /// Starts the renewal timer. Not in init: the timer's threads would be the agent's first
    /// threads, and the agent must still be single-threaded when it drops its capabilities
    /// (each thread keeps its own).
    func start() {
        let t = DispatchSource.makeTimerSource(queue: queue)
        let period = max(0.5, timeout / 4)
        t.schedule(deadline: .now() + period, repeating: period)
        t.setEventHandler { [weak self] in self?.renew() }
        t.resume()
        renewTimer = t
    }

    /// Touched on `queue` only: set by `cancel`, after which nothing is armed any more.
    private var cancelled = false

    /// Stops arming and returns once no arm call is running or can start: the shutdown removes
    /// the rules the calls write into right after, and an arm racing the removal would fail or
    /// recreate objects. The serial queue runs everything enqueued before the marker first;
    /// whatever is enqueued later (a worker's last events, the follow-up renewal) sees the flag.
    func cancel() {
        renewTimer?.cancel()
        queue.sync { cancelled = true }
    }

    /// Called by a worker after a batch; returns at once.
    func submit(_ events: [AttackEvent], queue workerQueue: UInt16) {
        let submitted = monotonicNanoseconds()
        queue.async { [self] in
            for e in events { handle(e, queue: workerQueue, submitted: submitted) }
            publish()
        }
    }

    private func handle(_ e: AttackEvent, queue q: UInt16, submitted: Int64) {
        let rate = e.agentRate(queues: queueCount)
        switch e.kind {
        case .started:
            if var a = attacked[e.prefix] {
                a.queues.insert(q)
                attacked[e.prefix] = a
            } else {
                attacked[e.prefix] = ([q], monotonicNanoseconds())
                logger.warning("attack-start", [("prefix", .string(e.prefix.description)), ("rate_pps", .double(rate)),
                                                ("synack_drop_pps", .double(e.synackDropRate * Double(queueCount))),
                                                ("rst_drop_pps", .double(e.rstDropRate * Double(queueCount))),
                                                ("queue", .from(Int(q)))])
            }
            armPrefix(e.prefix, submitted: submitted)
        case .ended:
            guard var a = attacked[e.prefix] else { return }
            a.queues.remove(q)
            if a.queues.isEmpty {
                attacked[e.prefix] = nil
                logger.info("attack-end", [("prefix", .string(e.prefix.description)), ("rate_pps", .double(rate)),
                                           ("duration_s", .double(Double(e.at - e.startedAt) / 1e9)),
                                           ("armed_until_s", .double(timeout))])
            } else {
                attacked[e.prefix] = a
            }
        }
    }

    /// A queue cannot keep up. In symmetric mode the kernel check is safe for every protected
    /// network (the protected side's SYNs are always recorded, so legitimate SYN-ACKs pass), so
    /// all of them are armed. In ingress-only mode the kernel never sees those SYNs and would
    /// drop legitimate SYN-ACKs: then only the overload is reported.
    func overloaded(queue q: UInt16, policy: Policy, backlogFor: Int64) {
        let submitted = monotonicNanoseconds()
        queue.async { [self] in
            let symmetric = policy.mode == .symmetric
            logger.warning("queue-overload", [("queue", .from(Int(q))), ("backlog_ms", .double(Double(backlogFor) / 1e6)),
                                              ("arming", .bool(symmetric)),
                                              ("prefixes", .strings(policy.protected.prefixes.map { $0.description }))])
            guard symmetric else { return }
            for p in policy.protected.prefixes { armPrefix(p, submitted: submitted) }
            publish()
        }
    }

    private func armPrefix(_ prefix: CIDR, submitted: Int64) {
        if cancelled { return }
        if dryRun {
            if armed[prefix] == nil {
                armed[prefix] = .max
                logger.warning("would-arm", [("prefix", .string(prefix.description)), ("dry_run", .bool(true))])
            }
            return
        }
        let now = monotonicNanoseconds()
        let timeoutNs = Int64(timeout * 1e9)
        if let until = armed[prefix], until - now > timeoutNs / 2 { return }
        let first = armed[prefix].map { $0 <= now } ?? true
        do {
            // The first arming takes the fast form; the renewal queued right behind it makes
            // sure an element left by an earlier run gets the full timeout too.
            try arm(prefix, timeout, !first)
            let done = monotonicNanoseconds()
            armed[prefix] = done + timeoutNs
            armOperations.add(1, ordering: .relaxed)
            lastArmLatencyNanoseconds.store(UInt64(max(0, done - submitted)), ordering: .relaxed)
            if first {
                queue.async { [self] in
                    if cancelled { return }
                    do { try arm(prefix, timeout, true) } catch {
                        armFailures.add(1, ordering: .relaxed)
                        logger.error("arm-failed", [("prefix", .string(prefix.description)), ("error", .string("\(error)"))])
                    }
                }
                logger.warning("victim-armed", [("prefix", .string(prefix.description)), ("timeout_s", .double(timeout)),
                                                ("latency_ms", .double(Double(done - submitted) / 1e6))])
            }
        } catch {
            armFailures.add(1, ordering: .relaxed)
            logger.error("arm-failed", [("prefix", .string(prefix.description)), ("error", .string("\(error)"))])
        }
    }

    private func renew() {
        let now = monotonicNanoseconds()
        for p in attacked.keys { armPrefix(p, submitted: now) }
        for (p, until) in armed where until <= now { armed[p] = nil }
        publish()
    }

    private func publish() {
        let now = monotonicNanoseconds()
        armedNow.store(dryRun ? 0 : UInt64(armed.values.filter { $0 > now }.count), ordering: .relaxed)
        attacksNow.store(UInt64(attacked.count), ordering: .relaxed)
    }
}
