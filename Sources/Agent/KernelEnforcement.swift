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
final class KernelEnforcement: Sendable {
    private let logger: Logger
    private let timeout: Double
    private let queueCount: Int
    private let arm: @Sendable (CIDR, Double, Bool) throws -> Void
    /// Adds a prefix under an RST attack to the `rst_armed4`/`rst_armed6` set (same arguments).
    private let armRST: @Sendable (CIDR, Double, Bool) throws -> Void
    /// An RST attack reported this soon after an overload is armed at once: the overload's own
    /// arming may have brought the queue back, and no further overload would come to arm it.
    private static let overloadMemoryNs: Int64 = 5_000_000_000
    private struct Target: Hashable { var prefix: CIDR; var vector: AttackEvent.Vector }
    /// What the enforcement queue works on (`SerialState`: nothing else reaches it).
    private struct Arming {
        /// Prefix → when its kernel entry runs out (monotonic ns), and per prefix and vector (a
        /// SYN-ACK and an RST attack on one prefix start and end apart) the queues whose engines
        /// currently report an attack on it.
        var armed: [CIDR: Int64] = [:]
        var attacked: [Target: (queues: Set<UInt16>, since: Int64)] = [:]
        /// Prefix under an RST attack → when its `rst_armed` entry runs out.
        var rstArmed: [CIDR: Int64] = [:]
        /// When a queue last reported an overload (monotonic ns; 0 never).
        var lastOverload: Int64 = 0
        /// The policy the workers last reported, and the refusal last logged (logged again only
        /// when it changes).
        var policy: Policy? = nil
        var loggedRefusal: String? = nil
        /// Set by `cancel`, after which nothing is armed any more.
        var cancelled = false
    }
    private let arming = SerialState(label: "reflectguard.enforcement", Arming())

    let armOperations = Atomic<UInt64>(0)
    let armFailures = Atomic<UInt64>(0)
    let armedNow = Atomic<UInt64>(0)
    let attacksNow = Atomic<UInt64>(0)
    /// Prefixes and networks some engine reports under an RST attack.
    let rstAttacksNow = Atomic<UInt64>(0)
    /// Prefixes whose RST attack outgrew the queue and is armed in the kernel.
    let rstArmedNow = Atomic<UInt64>(0)
    /// Time from the engine's report reaching us to the kernel set holding the prefix, last one.
    let lastArmLatencyNanoseconds = Atomic<UInt64>(0)
    /// Arm requests refused because the armed check would rely on state this router cannot see
    /// (`armingRefusal`), and whether the last request was refused.
    let armRefusals = Atomic<UInt64>(0)
    let armingRefusedNow = Atomic<Bool>(false)
    /// Dry-run: attacks are reported, nothing is armed (the kernel's verdicts stay untouched too).
    private let dryRun: Bool

    /// Also told every attack event (the Flowspec escalation).
    private let observer: (@Sendable ([AttackEvent], UInt16) -> Void)?

    init(logger: Logger, timeout: Double, queueCount: Int, dryRun: Bool,
         arm: @escaping @Sendable (CIDR, Double, Bool) throws -> Void,
         armRST: @escaping @Sendable (CIDR, Double, Bool) throws -> Void = { _, _, _ in },
         observer: (@Sendable ([AttackEvent], UInt16) -> Void)? = nil) {
        self.armRST = armRST
        self.observer = observer
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
        arming.every(max(0.5, timeout / 4), after: max(0.5, timeout / 4)) { [weak self] in self?.renew(&$0) }
    }

    /// Stops arming and returns once no arm call is running or can start: the shutdown removes
    /// the rules the calls write into right after, and an arm racing the removal would fail or
    /// recreate objects. The serial queue runs everything enqueued before the marker first;
    /// whatever is enqueued later (a worker's last events, the follow-up renewal) sees the flag.
    func cancel() {
        arming.stop { $0.cancelled = true }
    }

    /// Why the armed kernel check must not be armed for `policy` on this router, nil when it may.
    ///
    /// With `state = local` the armed check accepts a SYN-ACK only when its reversed 4-tuple is in
    /// the pending set, which nothing but the protected side's SYNs *forwarded by this router*
    /// fills. In ingress-only mode the router does not see them, and arming it drops every
    /// legitimate SYN-ACK to the prefix along with the flood (measured on a return router: 5 of
    /// 200 connections during a flood). With `state = conntrack` the armed check is conntrack's
    /// own (`ct state`), which replication fills, so it may arm in either mode.
    static func armingRefusal(_ policy: Policy) -> String? {
        if policy.stateSource == .conntrack { return nil }
        if policy.mode == .ingressOnly {
            return "mode ingress-only: this router does not see the protected side's SYNs, and the armed check would drop every legitimate SYN-ACK (state = conntrack arms conntrack's check instead)"
        }
        return nil
    }

    /// Whether arming may go ahead now; logs (once per change) and counts a refusal.
    private func mayArm(_ s: inout Arming) -> Bool {
        guard let policy = s.policy else { return true }
        let refusal = Self.armingRefusal(policy)
        armingRefusedNow.store(refusal != nil, ordering: .relaxed)
        if let refusal {
            armRefusals.add(1, ordering: .relaxed)
            if s.loggedRefusal != refusal {
                logger.warning("arming-refused", [("reason", .string(refusal)),
                                                  ("attacks", .from(Set(s.attacked.keys.map(\.prefix)).count))])
            }
        }
        s.loggedRefusal = refusal
        return refusal == nil
    }

    /// Called by a worker after a batch, with its engine's policy; returns at once.
    func submit(_ events: [AttackEvent], queue workerQueue: UInt16, policy: Policy) {
        observer?(events, workerQueue)
        let submitted = monotonicNanoseconds()
        arming.async { [self] s in
            s.policy = policy
            for e in events { handle(e, queue: workerQueue, submitted: submitted, &s) }
            publish(s)
        }
    }

    private func handle(_ e: AttackEvent, queue q: UInt16, submitted: Int64, _ s: inout Arming) {
        let rate = e.agentRate(queues: queueCount)
        let target = Target(prefix: e.prefix, vector: e.vector)
        switch e.kind {
        case .started:
            if var a = s.attacked[target] {
                a.queues.insert(q)
                s.attacked[target] = a
            } else {
                s.attacked[target] = ([q], monotonicNanoseconds())
                logger.warning("attack-start", [("prefix", .string(e.prefix.description)), ("vector", .string(e.vector.rawValue)),
                                                ("rate_pps", .double(rate)),
                                                ("synack_drop_pps", .double(e.synackDropRate * Double(queueCount))),
                                                ("rst_drop_pps", .double(e.rstDropRate * Double(queueCount))),
                                                ("queue", .from(Int(q)))])
            }
            // An RST attack is held by the engine, which knows the prefix's tracked flows; the
            // kernel knows only its pending SYNs and the flows learnt within learn_interval.
            // So it is armed only once it outgrows the queue (`overloaded`).
            // With state = conntrack the engines hold a SYN-ACK until its replicated state
            // arrives, which the kernel's ct-state check cannot: armed, the first SYN-ACK of
            // every connection that beats replication (most of them at LAN round-trip times)
            // would be dropped and cost the client a 1 s SYN retransmission. So an attack the
            // queue keeps up with arms nothing; only an overload (below) does.
            if e.vector == .synack, s.policy?.stateSource != .conntrack, mayArm(&s) { armPrefix(e.prefix, submitted: submitted, &s) }
            if e.vector == .rst, s.lastOverload != 0, monotonicNanoseconds() - s.lastOverload < Self.overloadMemoryNs {
                armRSTPrefix(e.prefix, &s)
            }
        case .ended:
            guard var a = s.attacked[target] else { return }
            a.queues.remove(q)
            if a.queues.isEmpty {
                s.attacked[target] = nil
                logger.info("attack-end", [("prefix", .string(e.prefix.description)), ("vector", .string(e.vector.rawValue)),
                                           ("rate_pps", .double(rate)),
                                           ("duration_s", .double(Double(e.at - e.startedAt) / 1e9)),
                                           ("armed_until_s", .double(timeout))])
            } else {
                s.attacked[target] = a
            }
        }
    }

    /// A queue cannot keep up. Where the kernel check is safe (`armingRefusal`: the protected
    /// side's SYNs are recorded here, or conntrack's view is used) every protected network is
    /// armed. Otherwise the kernel would drop legitimate SYN-ACKs: then only the overload is
    /// reported.
    func overloaded(queue q: UInt16, policy: Policy, backlogFor: Int64) {
        let submitted = monotonicNanoseconds()
        arming.async { [self] s in
            s.policy = policy
            let allowed = Self.armingRefusal(policy) == nil
            s.lastOverload = monotonicNanoseconds()
            logger.warning("queue-overload", [("queue", .from(Int(q))), ("backlog_ms", .double(Double(backlogFor) / 1e6)),
                                              ("arming", .bool(allowed)),
                                              ("prefixes", .strings(policy.protected.prefixes.map { $0.description }))])
            // RST attacks going on now have outgrown the queue: the kernel holds their RSTs on
            // flows it does not know, in either mode (ingress-only, the engine cannot track
            // those flows either).
            for p in Set(s.attacked.keys.filter { $0.vector == .rst }.map(\.prefix)) { armRSTPrefix(p, &s) }
            guard mayArm(&s) else { publish(s); return }
            for p in policy.protected.prefixes { armPrefix(p, submitted: submitted, &s) }
            publish(s)
        }
    }

    /// Arms (or renews, once half its timeout has run) the kernel's RST meter for a prefix under an
    /// RST attack; its entry runs out `timeout` after the last renewal, which `renew` makes
    /// while the attack lasts.
    private func armRSTPrefix(_ prefix: CIDR, announce: Bool = true, _ s: inout Arming) {
        if s.cancelled { return }
        if dryRun {
            if s.rstArmed[prefix] == nil {
                s.rstArmed[prefix] = .max
                logger.warning("would-arm-rst", [("prefix", .string(prefix.description)), ("dry_run", .bool(true))])
            }
            return
        }
        let start = monotonicNanoseconds()
        let timeoutNs = Int64(timeout * 1e9)
        if let until = s.rstArmed[prefix], until - start > timeoutNs / 2 { return }
        let first = s.rstArmed[prefix].map { $0 <= start } ?? true
        do {
            try armRST(prefix, timeout, true)
            let done = monotonicNanoseconds()
            s.rstArmed[prefix] = done + timeoutNs
            armOperations.add(1, ordering: .relaxed)
            if first && announce {
                logger.warning("rst-armed", [("prefix", .string(prefix.description)), ("timeout_s", .double(timeout)),
                                             ("latency_ms", .double(Double(done - start) / 1e6))])
            }
        } catch {
            armFailures.add(1, ordering: .relaxed)
            logger.error("arm-failed", [("prefix", .string(prefix.description)), ("vector", .string("rst")),
                                        ("error", .string("\(error)"))])
        }
    }

    private func armPrefix(_ prefix: CIDR, submitted: Int64, announce: Bool = true, _ s: inout Arming) {
        if s.cancelled { return }
        if dryRun {
            if s.armed[prefix] == nil {
                s.armed[prefix] = .max
                logger.warning("would-arm", [("prefix", .string(prefix.description)), ("dry_run", .bool(true))])
            }
            return
        }
        let now = monotonicNanoseconds()
        let timeoutNs = Int64(timeout * 1e9)
        if let until = s.armed[prefix], until - now > timeoutNs / 2 { return }
        let first = s.armed[prefix].map { $0 <= now } ?? true
        do {
            // The first arming takes the fast form; the renewal queued right behind it makes
            // sure an element left by an earlier run gets the full timeout too.
            try arm(prefix, timeout, !first)
            let done = monotonicNanoseconds()
            s.armed[prefix] = done + timeoutNs
            armOperations.add(1, ordering: .relaxed)
            lastArmLatencyNanoseconds.store(UInt64(max(0, done - submitted)), ordering: .relaxed)
            if first {
                arming.async { [self] s in
                    if s.cancelled { return }
                    do { try arm(prefix, timeout, true) } catch {
                        armFailures.add(1, ordering: .relaxed)
                        logger.error("arm-failed", [("prefix", .string(prefix.description)), ("error", .string("\(error)"))])
                    }
                }
                if announce { logger.warning("victim-armed", [("prefix", .string(prefix.description)), ("timeout_s", .double(timeout)),
                                                ("latency_ms", .double(Double(done - submitted) / 1e6))]) }
            }
        } catch {
            armFailures.add(1, ordering: .relaxed)
            logger.error("arm-failed", [("prefix", .string(prefix.description)), ("error", .string("\(error)"))])
        }
    }

    /// The rules were applied again (the watchdog's repair, a reload): a table that went came
    /// back with empty armed sets, and `armPrefix` re-adds a prefix only once its entry is half
    /// run out, which left a flood's victim unarmed for up to half the timeout (measured: 40 s)
    /// while the gauge said armed. So every prefix armed now goes back in at once, with its
    /// full timeout. Returns at once; the arming runs on the enforcement queue.
    func rearm(after reason: String) {
        arming.async { [self] s in
            if s.cancelled || dryRun { return }
            let now = monotonicNanoseconds()
            let rstPrefixes = s.rstArmed.filter { $0.value > now }.map(\.key)
            for p in rstPrefixes { s.rstArmed[p] = nil; armRSTPrefix(p, announce: false, &s) }
            let prefixes = s.armed.filter { $0.value > now }.map(\.key)
            guard !prefixes.isEmpty else { publish(s); return }
            for p in prefixes { s.armed[p] = nil }
            for p in prefixes { armPrefix(p, submitted: now, announce: false, &s) }
            logger.warning("victims-rearmed", [("reason", .string(reason)),
                                               ("prefixes", .strings(prefixes.map { $0.description }.sorted())),
                                               ("armed", .from(s.armed.filter { $0.value > now }.count))])
            publish(s)
        }
    }

    private func renew(_ s: inout Arming) {
        let now = monotonicNanoseconds()
        let synack = s.policy?.stateSource == .conntrack ? []
            : Set(s.attacked.keys.filter { $0.vector == .synack }.map(\.prefix))
        if !synack.isEmpty, mayArm(&s) { for p in synack { armPrefix(p, submitted: now, &s) } }
        for (p, until) in s.armed where until <= now { s.armed[p] = nil }
        // An RST attack armed once stays armed while it lasts, though the kernel now keeps the
        // queue below overload: letting it run out would let the flood back in.
        for p in Set(s.attacked.keys.filter { $0.vector == .rst }.map(\.prefix)) where s.rstArmed[p].map({ $0 > now }) == true {
            armRSTPrefix(p, &s)
        }
        for (p, until) in s.rstArmed where until <= now {
            s.rstArmed[p] = nil
            logger.info("rst-disarmed", [("prefix", .string(p.description))])
        }
        publish(s)
    }

    private func publish(_ s: Arming) {
        let now = monotonicNanoseconds()
        armedNow.store(dryRun ? 0 : UInt64(s.armed.values.filter { $0 > now }.count), ordering: .relaxed)
        attacksNow.store(UInt64(Set(s.attacked.keys.map(\.prefix)).count), ordering: .relaxed)
        rstAttacksNow.store(UInt64(s.attacked.keys.filter { $0.vector == .rst }.count), ordering: .relaxed)
        rstArmedNow.store(dryRun ? 0 : UInt64(s.rstArmed.values.filter { $0 > now }.count), ordering: .relaxed)
    }
}
