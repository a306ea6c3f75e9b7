#if canImport(Glibc)
import Glibc
#endif
import NFQueue
import Conntrack
import Flowspec
import VerdictEngine

/// Why the agent could not start, with its documented exit code (1 runtime, 2 usage, 3 rules).
public struct AgentStartError: Error, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32
    public var description: String { message }
}

/// `reflectguard run`: applies the rules, binds one worker per queue, serves metrics, and turns
/// signals into lifecycle steps (SIGTERM/SIGINT drain and exit 0, SIGHUP reloads rules and policy
/// atomically while the engines keep their state).
public final class Agent {
    let settings: AgentSettings
    let hooks: RulesHooks
    let logger: Logger
    let applyRules: Bool
    let keepRules: Bool
    /// SIGHUP reloads taken and refused, for /metrics.
    let reloads = ReloadCounters()
    /// The XDP path, when `kernel_path` chose it (set once at start, read by reloads).
    private var xdpPath: XDPEnforcement?
    /// The Flowspec escalation, when `flowspec_peer` is set (set once at start, read by reloads).
    private var flowspec: FlowspecEscalation?

    public init(settings: AgentSettings, hooks: RulesHooks, logger: Logger, applyRules: Bool, keepRules: Bool) {
        self.settings = settings
        self.hooks = hooks
        self.logger = logger
        self.applyRules = applyRules
        self.keepRules = keepRules
    }

    /// Runs until SIGTERM/SIGINT. Returns the process exit code.
    public func run(initialPolicy: Policy) throws(AgentStartError) -> Int32 {
        // A log reader that goes away (a pipe, a terminal closed) must not kill the agent before
        // its shutdown has removed the rules: writes then fail with EPIPE, which the logger drops.
        signal(SIGPIPE, SIG_IGN)
        // With fd 2 closed at start, the next socket would get it and receive the log lines.
        if fcntl(2, F_GETFD) < 0 {
            let null = open("/dev/null", O_WRONLY)
            if null >= 0, null != 2 { dup2(null, 2); close(null) }
        }
        // Signals are taken synchronously by this thread (sigtimedwait), so every thread started
        // below must inherit them blocked.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        guard !initialPolicy.protected.isEmpty else {
            throw AgentStartError(message: "no protected network: give --protect CIDR or define protected_v4/protected_v6 in the rules", exitCode: 2)
        }

        // One agent per network namespace, whatever its queues or mode: a second one would take
        // over the first one's rules (they share the table users' scripts know) and remove them
        // at its exit. Taken before anything else, so a second `run` leaves without a trace.
        let acquired: Result<NamespaceLock, HeldError>
        do throws(SystemCallError) { acquired = try NamespaceLock.acquire() } catch {
            throw AgentStartError(message: "namespace lock: \(error)", exitCode: 1)
        }
        let lock: NamespaceLock
        switch acquired {
        case .success(let l): lock = l
        case .failure(let held): throw AgentStartError(message: "\(held)", exitCode: 1)
        }

        // Everything that can fail comes before the rules: the queues (taken by another
        // program), the engines' memory, the metrics port. A failure then leaves the kernel
        // exactly as it was. Packets the rules queue between the apply and the workers' start
        // wait in the kernel queue, milliseconds.
        var sockets: [QueueSocket] = []
        func releaseQueues() { for s in sockets { Self.releaseAccepting(s) } }
        for q in settings.queues {
            do {
                let s = try QueueSocket(settings.queueConfiguration(q))
                for warning in s.warnings { logger.warning("queue-degraded", [("queue", .from(Int(q))), ("detail", .string(warning))]) }
                sockets.append(s)
            } catch {
                releaseQueues()
                throw AgentStartError(message: "queue \(q): \(error)", exitCode: 1)
            }
        }

        var policy = initialPolicy
        policy.queueCount = settings.queues.count
        do throws(AgentStartError) { try TableMemory.check(policy, queues: sockets.count) } catch {
            releaseQueues()
            throw error
        }
        // The XDP path (kernel_path): loaded and attached before the rules, while the agent still
        // holds the privileges loading needs; its armed trie is written beside the nft armed sets.
        let xdp: XDPEnforcement?
        do throws(AgentStartError) {
            xdp = try XDPEnforcement.select(settings.xdp, policy: policy, armedTimeout: settings.armedTimeout,
                                            logger: logger, dryRun: settings.dryRun)
        } catch {
            releaseQueues()
            throw error
        }
        xdpPath = xdp
        let flowspec = settings.flowspec.map {
            FlowspecEscalation(config: $0, logger: logger, dryRun: settings.dryRun, queueCount: settings.queues.count,
                               linger: settings.armedTimeout)
        }
        self.flowspec = flowspec
        let enforcement = KernelEnforcement(logger: logger, timeout: settings.armedTimeout,
                                             queueCount: settings.queues.count, dryRun: settings.dryRun,
                                             arm: { [nftArm = hooks.arm] prefix, timeout, renew in
                                                 xdp?.arm(prefix, timeout: timeout)
                                                 try nftArm(prefix, timeout, renew)
                                             },
                                             armRST: hooks.armRST,
                                             observer: flowspec.map(Self.observer))
        let shared = AgentShared(settings: settings, policy: policy, logger: logger, enforcement: enforcement)
        // state = conntrack: the ctnetlink event socket opens before the rules go in, so a kernel
        // without conntrack events fails the start with nothing applied.
        var feed: ConntrackFeed? = nil
        var mailboxes: [ConntrackMailbox] = []
        if policy.stateSource == .conntrack {
            do throws(SystemCallError) {
                for _ in sockets { mailboxes.append(try ConntrackMailbox()) }
                feed = try ConntrackFeed(shared: shared, mailboxes: mailboxes)
            } catch {
                releaseQueues()
                throw AgentStartError(message: "state = conntrack: \(error)", exitCode: 1)
            }
            for problem in ConntrackReadiness.problems(rulesText: nil) {
                logger.warning("conntrack-not-ready", [("detail", .string(problem))])
            }
        }
        // Flows established before the start, from one conntrack dump into every engine before
        // any worker takes a packet (`EstablishedSeeds`). A reload keeps them: it changes the
        // engines' policy, never their flows.
        let seeds = EstablishedSeeds.read(policy: policy, limit: EstablishedSeeds.limit(policy))
        let seededAt = monotonicNanoseconds()
        var seeded = 0
        var workers: [(Worker, QueueSocket)] = []
        for (i, s) in sockets.enumerated() {
            // A random hash seed per engine: flooders cannot aim at the tables' buckets.
            var rng = SystemRandomNumberGenerator()
            let seed = rng.next() as UInt64
            let worker = Worker(queue: s.queue, shared: shared, seed: seed, mailbox: mailboxes.isEmpty ? nil : mailboxes[i])
            seeded = worker.seedEstablished(seeds.flows, at: seededAt)
            workers.append((worker, s))
        }
        let seedFigures = report(seeds, seeded: seeded, limit: EstablishedSeeds.limit(policy))

        let watchdog = RulesWatchdog(logger: logger, repair: applyRules, missing: hooks.missing, reapply: hooks.reapply,
                                     afterReapply: { enforcement.rearm(after: "rules re-applied") })
        let registry = MetricsRegistry(workers: workers.map { $0.0.figures }, enforcement: enforcement, watchdog: watchdog,
                                       dryRun: settings.dryRun, flowspec: flowspec, conntrack: feed?.figures,
                                       kernelCounters: hooks.kernelCounters, seeds: seedFigures,
                                       reloads: reloads, version: settings.version)
        var metricsServer: MetricsServer? = nil
        if let m = settings.metrics {
            do {
                metricsServer = try MetricsServer(host: m.host, port: m.port,
                                                  render: { registry.render() + (xdp?.metrics() ?? "") },
                                                  shouldStop: { shared.stopping })
            } catch {
                xdp?.release()
                releaseQueues()
                throw AgentStartError(message: "metrics endpoint: \(error)", exitCode: 1)
            }
        }

        if applyRules {
            do {
                if let adopted = try hooks.apply() { logger.info("rules-adopted", [("detail", .string(adopted))]) }
            } catch {
                xdp?.release()
                releaseQueues()
                throw AgentStartError(message: "applying rules: \(error)", exitCode: (error as? ExitCoded)?.exitCode ?? 3)
            }
        }

        // Set up: from here on CAP_NET_ADMIN is all the agent needs (arming, reloads and the
        // removal at exit, its iptables-nft children included). Still one thread here, as the
        // drop requires; every thread starts below.
        let kept = Capabilities.restrict(to: Self.runtimeCapabilities)
        for k in kept { logger.warning("privileges-kept", [("detail", .string(k))]) }

        enforcement.start()
        xdp?.start()
        watchdog.start()
        flowspec?.start()
        var threads: [pthread_t] = []
        threads += spawn(each: workers.map { w, s in { w.run(s) } })
        if let feed { threads.append(spawn { feed.run() }) }
        if let metricsServer { threads.append(spawn { metricsServer.serve() }) }

        logger.info("start", [
            ("queues", .strings(settings.queues.map { String($0) })),
            ("protected", .strings(policy.protected.prefixes.map { $0.description })),
            ("mode", .string(policy.mode.rawValue)),
            ("state", .string(policy.stateSource.rawValue)),
            ("kernel_path", .string(xdp == nil ? "nft" : "xdp")),
            ("dry_run", .bool(settings.dryRun)),
            ("rules_applied", .bool(applyRules)),
            ("queue_maxlen", .from(Int(settings.queueMaxLength))),
            ("rcvbuf", .from(settings.queueConfiguration(0).effectiveReceiveBufferBytes)),
            ("metrics", .string(metricsServer.map { $0.boundAddress } ?? "off")),
            ("capabilities", .string(kept.isEmpty ? "net_admin" : "more, see privileges-kept")),
            ("pid", .from(Int(getpid()))),
        ])

        ServiceManager.ready(status: status(policy))

        // The lifecycle loop: signals and control requests (`reflectguard reload|stop`) move it.
        // Signals are taken as they come (two SIGHUPs a quarter second apart are two reloads; a
        // signal pending while another is handled would merge with the next of its kind); the
        // lock's socket is looked at after each wait, so a request waits a quarter second at most;
        // the control server never waits on a client, so no client can hold up a signal.
        let control = lock.controlServer()
        var running = true
        while running {
            // A client still sending its request line is looked at again soon.
            var tick = timespec(tv_sec: 0, tv_nsec: control.waiting > 0 ? 10_000_000 : 250_000_000)
            let s = sigtimedwait(&signals, nil, &tick)
            if s == SIGHUP {
                _ = reload(shared)
            } else if s == SIGTERM || s == SIGINT {
                logger.info("stopping", [("signal", .string(s == SIGTERM ? "SIGTERM" : "SIGINT"))])
                break
            }
            control.step { command in
                switch command {
                case .reload:
                    return reload(shared)
                case .stop:
                    logger.info("stopping", [("request", .string("reflectguard stop"))])
                    running = false
                    return .ok("stopping: the agent removes its rules and exits")
                }
            }
        }
        ServiceManager.stopping()

        // Arm calls write into the ruleset, and a re-apply would put it back: the pending ones
        // finish before it goes.
        enforcement.cancel()
        watchdog.cancel()
        flowspec?.stop()
        var exitCode: Int32 = 0
        var left: String? = "--no-apply"
        if applyRules {
            // The rules go first, while the workers still serve: from then on nothing queues new
            // packets, and what was queued already is in the sockets for the workers' drain. The
            // other order (drain, unbind, then remove) leaves the rules queueing between the
            // drain and the unbind, and the kernel drops (nfqnl_flush) whatever they queued.
            // Rules that stay (--keep-rules, a table that was there before) queue with bypass:
            // accepted once the workers unbind.
            do { left = try hooks.release(keepRules) } catch {
                logger.error("remove-rules-failed", [("error", .string("\(error)"))])
                exitCode = 1
            }
            if let left { logger.info("rules-left", [("reason", .string(left))]) }
        }
        xdp?.release()
        shared.stop()
        for t in threads { pthread_join(t, nil) }
        if settings.dryRun { reportDryRun(shared.dryRunTotals()) }
        logger.info("stop", [
            ("received", .from(registry.total(.received))),
            ("accepted", .from(registry.total(.accepted))),
            ("dropped", .from(registry.total(.dropped))),
            ("would_drop", .from(registry.total(.wouldDrop))),
            ("rules_removed", .bool(exitCode == 0 && left == nil)),
        ])
        withExtendedLifetime(lock) {}
        return exitCode
    }

    /// Says once what the start's seeding did: how many flows, the cap when it bit, and a
    /// conntrack that could not be read (that stops nothing, but must not pass unsaid).
    private func report(_ seeds: EstablishedSeeds, seeded: Int, limit: Int) -> SeedFigures {
        var fields: [(String, LogValue)] = [("seeded", .from(seeded)), ("established", .from(seeds.established))]
        if seeds.capped > 0 {
            // The rest stay unknown until their protected end sends (`limit`: a quarter of syn_table_size).
            fields += [("capped", .from(seeds.capped)), ("limit", .from(limit))]
        }
        if seeds.failure == nil && seeds.entries == 0 {
            // Not a failure (a quiet router has none), but the common reason is worth a word.
            fields.append(("detail", .string("the conntrack table holds no TCP entry: conntrack tracks a network namespace's flows only when some rule there uses it (any ct expression)")))
        }
        if let failure = seeds.failure {
            logger.warning("ct-seed-unavailable", fields + [
                ("error", .string(failure)),
                ("detail", .string("the kernel's conntrack table could not be read: flows older than the agent stay unknown until their protected end sends (their RSTs meet the untracked budgets; on a guarded port a blind reset is judged once the window is seen)")),
            ])
        } else {
            logger.info("ct-seed", fields)
        }
        return SeedFigures(seeded: seeded, capped: seeds.capped, successful: seeds.failure == nil)
    }

    /// The Flowspec escalation told every attack event beside kernel enforcement.
    private static func observer(_ f: FlowspecEscalation) -> @Sendable ([AttackEvent], UInt16) -> Void {
        { events, q in f.submit(events, queue: q) }
    }

    /// What the agent keeps once set up. CAP_NET_ADMIN covers libnftables (arming, reloads,
    /// removal), iptables-nft and the queues' SO_RCVBUFFORCE; a feature that needs more after
    /// start (CAP_BPF for an XDP path, say) adds it here.
    static let runtimeCapabilities: Set<Int> = [Capabilities.netAdmin]

    /// Gives every packet already queued to `socket` an accept, then unbinds and closes: the
    /// kernel drops what is still queued to a socket that closes, and a failed start must not.
    static func releaseAccepting(_ socket: QueueSocket) {
        let receiver = PacketReceiver(socket)
        let batcher = VerdictBatcher(socket, capacity: receiver.batchCapacity)
        var rounds = 0
        while rounds < 10_000, case .processed(let n)? = try? receiver.receive(wait: false), n > 0 {
            receiver.forEachPacket { batcher.record($0.id, .accept, now: 0) }
            batcher.flush()
            rounds += 1
        }
        socket.unbind()
        socket.close()
    }

    /// The one-line STATUS= systemd shows.
    private func status(_ p: Policy) -> String {
        let q = settings.queues.count == 1 ? "queue \(settings.queues.lowerBound)"
            : "queues \(settings.queues.lowerBound)-\(settings.queues.upperBound)"
        return "\(settings.dryRun ? "dry-run, scoring" : "protecting") \(p.protected.prefixes.count) network(s) on \(q), \(p.mode.rawValue)"
    }

    /// Reloads rules and policy (SIGHUP or `reflectguard reload`); the reply says whether they
    /// were taken, and a refused reload leaves the running rules and policy as they were.
    private func reload(_ shared: AgentShared) -> ControlChannel.Reply {
        let started = monotonicNanoseconds()
        ServiceManager.reloading()
        var reply = ControlChannel.Reply.ok("")
        defer { ServiceManager.ready(status: status(shared.currentPolicy().0)) }
        func refuse(_ why: String, exitCode: Int32 = 1) {
            reloads.record(success: false)
            logger.error("reload-failed", [("error", .string(why)), ("kept", .string("previous rules and policy"))])
            reply = .refused(exitCode: exitCode, message: why)
        }
        do {
            // Everything is checked before the kernel sees the new rules: a refused reload must
            // leave the running ruleset exactly as it was.
            let plan = try hooks.reload()
            guard !plan.policy.protected.isEmpty else {
                refuse("no protected network in the new rules")
                return reply
            }
            // Workers are bound to the queue numbers given at start; rules queueing to other
            // numbers would send packets to queues nobody reads (bypass: unjudged).
            guard plan.queues == settings.queues else {
                refuse("queues changed from \(settings.queues.lowerBound):\(settings.queues.upperBound) to \(plan.queues.lowerBound):\(plan.queues.upperBound); restart the agent to change queues")
                return reply
            }
            // The state source and its wait are fixed at start (the conntrack feed, the engines'
            // conntrack tables and the holding are set up for them).
            guard plan.policy.stateSource == shared.currentPolicy().0.stateSource,
                  plan.policy.conntrackWait == shared.currentPolicy().0.conntrackWait else {
                refuse("state or ct_wait changed; restart the agent to change them")
                return reply
            }
            // The enforcement's arming timeout is fixed at start.
            guard plan.armedTimeout == settings.armedTimeout else {
                refuse("armed_timeout changed from \(settings.armedTimeout) s to \(plan.armedTimeout) s; restart the agent to change it")
                return reply
            }
            // The Flowspec session (peer, AS numbers, router ID, speaker) is fixed at start: a new
            // one needs a new speaker, and a restart gives it cleanly (the old session closes,
            // the upstream withdraws every route of it). The policy is taken below.
            if let why = Self.flowspecRefusal(running: flowspec?.escalatorConfig, new: plan.flowspec) {
                refuse(why)
                return reply
            }
            try plan.apply()
            shared.enforcement.rearm(after: "reload")
            var p = plan.policy
            p.queueCount = settings.queues.count
            shared.replacePolicy(p)
            xdpPath?.update(p)
            // After the rules: the routes follow the policy now in force (a prefix no longer
            // protected is withdrawn before the reload answers).
            let flowspecSummary = plan.flowspec.flatMap { new in flowspec?.reconfigure(new) }
            let ms = Double(monotonicNanoseconds() - started) / 1e6
            reloads.record(success: true)
            logger.info("reload", [("protected", .strings(p.protected.prefixes.map { $0.description })),
                                   ("mode", .string(p.mode.rawValue)),
                                   ("ms", .double(ms))])
            reply = .ok("reloaded: \(status(p))" + (flowspecSummary.map { "; \($0)" } ?? ""))
        } catch {
            refuse("\(error)", exitCode: (error as? ExitCoded)?.exitCode ?? 1)
        }
        return reply
    }

    /// Why a reload's Flowspec settings cannot be taken by the running agent, or nil.
    static func flowspecRefusal(running: FlowspecConfig?, new: FlowspecConfig?) -> String? {
        switch (running, new) {
        case (nil, nil):
            return nil
        case (nil, .some):
            return "flowspec_peer set; restart the agent to start the Flowspec escalation"
        case (.some, nil):
            return "flowspec_peer emptied; restart the agent to stop the Flowspec escalation (its session closes and the upstream withdraws every route)"
        case (.some(let old), .some(let new)):
            guard old.sameSession(as: new) else {
                return "flowspec_peer, flowspec_peer_as, flowspec_local_as, flowspec_router_id, flowspec_speaker or flowspec_api changed; "
                    + "restart the agent to change the Flowspec session (its session closes and the upstream withdraws every route)"
            }
            return nil
        }
    }

    private func reportDryRun(_ pipelines: [DryRunTotals]) {
        var accepted: UInt64 = 0
        var wouldDrop: UInt64 = 0
        var reasons: [Reason: UInt64] = [:]
        for p in pipelines {
            accepted += p.accepted
            wouldDrop += p.wouldDrop
            for (r, n) in p.reasons { reasons[r, default: 0] += n }
        }
        let sorted = reasons.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key.rawValue < $1.key.rawValue) }
        var text = "dry-run summary: \(accepted + wouldDrop) packets judged, \(wouldDrop) would be dropped, \(accepted) accepted\n"
        for (r, n) in sorted { text += "  \(r.token): \(n)\n" }
        print(text, terminator: "")
        StandardStreams.flushOutput()
        logger.info("dry-run-summary", [("judged", .from(accepted + wouldDrop)), ("would_drop", .from(wouldDrop))]
                    + sorted.map { ("reason_\($0.key.token)", LogValue.from($0.value)) })
    }
}

/// Errors that know their documented exit code (rules errors are 3).
public protocol ExitCoded {
    var exitCode: Int32 { get }
}

/// Starts a thread running `body`; the agent joins it at shutdown. `sending`: what the closure
/// captures belongs to the new thread from now on, and the compiler checks the caller keeps no
/// use of it.
func spawn(_ body: sending @escaping () -> Void) -> pthread_t { startThread(body) }

/// One thread per closure, `sending` as for `spawn` (the closures and all they capture, the
/// workers and their sockets say, go to the threads together).
func spawn(each bodies: sending [() -> Void]) -> [pthread_t] { bodies.map { startThread($0) } }

private func startThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var t = pthread_t()
    let r = pthread_create(&t, nil, { arg in
        let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        b.body()
        return nil
    }, box)
    precondition(r == 0, "pthread_create: \(r)")
    return t
}
