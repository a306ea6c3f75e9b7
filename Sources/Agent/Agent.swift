#if canImport(Glibc)
import Glibc
#endif
import NFQueue
import VerdictEngine
import Scoring

/// Why the agent could not start, with the exit code CONTRACT.md gives it.
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

    public init(settings: AgentSettings, hooks: RulesHooks, logger: Logger, applyRules: Bool, keepRules: Bool) {
        self.settings = settings
        self.hooks = hooks
        self.logger = logger
        self.applyRules = applyRules
        self.keepRules = keepRules
    }

    /// Runs until SIGTERM/SIGINT. Returns the process exit code.
    public func run(initialPolicy: Policy) throws(AgentStartError) -> Int32 {
        guard ReasonIndex.verify() else {
            throw AgentStartError(message: "internal: reason counter layout changed", exitCode: 1)
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

        // Bind every queue before touching the rules: when a queue is taken (another agent runs),
        // this one leaves without disturbing the running agent's rules. Packets the rules queue
        // meanwhile wait in the kernel queue until the workers start, milliseconds later.
        var sockets: [QueueSocket] = []
        for q in settings.queues {
            do {
                let s = try QueueSocket(settings.queueConfiguration(q))
                for warning in s.warnings { logger.warning("queue-degraded", [("queue", .from(Int(q))), ("detail", .string(warning))]) }
                sockets.append(s)
            } catch {
                for s in sockets { Self.releaseAccepting(s) }
                throw AgentStartError(message: "queue \(q): \(error)", exitCode: 1)
            }
        }

        var policy = initialPolicy
        if applyRules {
            do { policy = try hooks.apply() } catch {
                for s in sockets { Self.releaseAccepting(s) }
                throw AgentStartError(message: "applying rules: \(error)", exitCode: (error as? ExitCoded)?.exitCode ?? 3)
            }
        }
        policy.queueCount = settings.queues.count

        let enforcement = KernelEnforcement(logger: logger, timeout: settings.armedTimeout,
                                             queueCount: settings.queues.count, dryRun: settings.dryRun,
                                             arm: hooks.arm)
        let shared = AgentShared(settings: settings, policy: policy, logger: logger, enforcement: enforcement)
        var workers: [(Worker, QueueSocket)] = []
        for s in sockets {
            // A random hash seed per engine: flooders cannot aim at the tables' buckets.
            var rng = SystemRandomNumberGenerator()
            let seed = rng.next() as UInt64
            workers.append((Worker(queue: s.queue, shared: shared, seed: seed), s))
        }

        let registry = MetricsRegistry(workers: workers.map { $0.0 }, enforcement: enforcement, dryRun: settings.dryRun)
        var metricsServer: MetricsServer? = nil
        if let m = settings.metrics {
            do {
                metricsServer = try MetricsServer(host: m.host, port: m.port, render: { registry.render() },
                                                  shouldStop: { shared.stopping })
            } catch {
                for (_, s) in workers { Self.releaseAccepting(s) }
                if applyRules, !keepRules { try? hooks.remove() }
                throw AgentStartError(message: "metrics endpoint: \(error)", exitCode: 1)
            }
        }

        var threads: [pthread_t] = []
        for (w, s) in workers { threads.append(spawn { w.run(s) }) }
        if let metricsServer { threads.append(spawn { metricsServer.serve() }) }

        logger.info("start", [
            ("queues", .strings(settings.queues.map { String($0) })),
            ("protected", .strings(policy.protected.prefixes.map { $0.description })),
            ("mode", .string(policy.mode.rawValue)),
            ("dry_run", .bool(settings.dryRun)),
            ("rules_applied", .bool(applyRules)),
            ("queue_maxlen", .from(Int(settings.queueMaxLength))),
            ("rcvbuf", .from(settings.queueConfiguration(0).effectiveReceiveBufferBytes)),
            ("metrics", .string(metricsServer.map { "\(settings.metrics!.host):\($0.boundPort)" } ?? "off")),
            ("pid", .from(Int(getpid()))),
        ])

        // The lifecycle loop: only signals move it.
        var timeout = timespec(tv_sec: 1, tv_nsec: 0)
        while true {
            let s = sigtimedwait(&signals, nil, &timeout)
            if s == SIGHUP {
                reload(shared)
            } else if s == SIGTERM || s == SIGINT {
                logger.info("stopping", [("signal", .string(s == SIGTERM ? "SIGTERM" : "SIGINT"))])
                break
            }
        }

        // Arm calls write into the ruleset: the pending ones finish before it goes.
        enforcement.cancel()
        var exitCode: Int32 = 0
        if applyRules, !keepRules {
            // The rules go first, while the workers still serve: from then on nothing queues new
            // packets, and what was queued already is in the sockets for the workers' drain. The
            // other order (drain, unbind, then remove) leaves the rules queueing between the
            // drain and the unbind, and the kernel drops (nfqnl_flush) whatever they queued.
            // With --keep-rules the workers drain and unbind, and the rules' bypass accepts.
            do { try hooks.remove() } catch {
                logger.error("remove-rules-failed", [("error", .string("\(error)"))])
                exitCode = 1
            }
        }
        shared.stop()
        for t in threads { pthread_join(t, nil) }
        if settings.dryRun { reportDryRun(shared.dryRunPipelines()) }
        logger.info("stop", [
            ("received", .from(registry.total(.received))),
            ("accepted", .from(registry.total(.accepted))),
            ("dropped", .from(registry.total(.dropped))),
            ("would_drop", .from(registry.total(.wouldDrop))),
            ("rules_removed", .bool(applyRules && !keepRules)),
        ])
        return exitCode
    }

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

    private func reload(_ shared: AgentShared) {
        let started = monotonicNanoseconds()
        func refuse(_ why: String) {
            logger.error("reload-failed", [("error", .string(why)), ("kept", .string("previous rules and policy"))])
        }
        do {
            // Everything is checked before the kernel sees the new rules: a refused reload must
            // leave the running ruleset exactly as it was.
            let plan = try hooks.reload()
            guard !plan.policy.protected.isEmpty else {
                return refuse("no protected network in the new rules")
            }
            // Workers are bound to the queue numbers given at start; rules queueing to other
            // numbers would send packets to queues nobody reads (bypass: unjudged).
            guard plan.queues == settings.queues else {
                return refuse("queues changed from \(settings.queues.lowerBound):\(settings.queues.upperBound) to \(plan.queues.lowerBound):\(plan.queues.upperBound); restart the agent to change queues")
            }
            // The enforcement's arming timeout is fixed at start.
            guard plan.armedTimeout == settings.armedTimeout else {
                return refuse("armed_timeout changed from \(settings.armedTimeout) s to \(plan.armedTimeout) s; restart the agent to change it")
            }
            try plan.apply()
            var p = plan.policy
            p.queueCount = settings.queues.count
            shared.replacePolicy(p)
            logger.info("reload", [("protected", .strings(p.protected.prefixes.map { $0.description })),
                                   ("mode", .string(p.mode.rawValue)),
                                   ("ms", .double(Double(monotonicNanoseconds() - started) / 1e6))])
        } catch {
            refuse("\(error)")
        }
    }

    private func reportDryRun(_ pipelines: [ScoringPipeline]) {
        var accepted: UInt64 = 0
        var wouldDrop: UInt64 = 0
        var reasons: [Reason: UInt64] = [:]
        for p in pipelines {
            accepted += p.accepted
            wouldDrop += p.dropped
            for (r, n) in p.reasons { reasons[r, default: 0] += n }
        }
        let sorted = reasons.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key.rawValue < $1.key.rawValue) }
        var text = "dry-run summary: \(accepted + wouldDrop) packets judged, \(wouldDrop) would be dropped, \(accepted) accepted\n"
        for (r, n) in sorted { text += "  \(r.token): \(n)\n" }
        print(text, terminator: "")
        fflush(stdout)
        logger.info("dry-run-summary", [("judged", .from(accepted + wouldDrop)), ("would_drop", .from(wouldDrop))]
                    + sorted.map { ("reason_\($0.key.token)", LogValue.from($0.value)) })
    }
}

/// Errors that know their CONTRACT.md exit code (rules errors are 3).
public protocol ExitCoded {
    var exitCode: Int32 { get }
}

/// Starts a thread running `body`; the agent joins it at shutdown.
func spawn(_ body: @escaping () -> Void) -> pthread_t {
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
