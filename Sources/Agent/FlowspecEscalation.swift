#if canImport(Glibc)
import Glibc
#endif
import Flowspec
import NFQueue
import NftBackend
import Synchronization
import VerdictEngine

/// Carries out the Flowspec escalation (Flowspec's `Escalator`) beside kernel enforcement: takes
/// the engines' attack events, reads the kernel's per-victim counts once a second, and announces
/// and withdraws routes through the speaker. Runs on its own serial queue, so no worker ever
/// waits for nft or the speaker. Whatever fails here (no speaker, no session, a refused route)
/// is reported with an event and a metric and never touches local protection.
final class FlowspecEscalation: Sendable {
    private let logger: Logger
    private let dryRun: Bool
    private let queueCount: Int
    private let config: FlowspecConfig
    /// What the escalation's queue works on (`SerialState`: nothing else reaches it).
    private struct Escalation {
        var escalator: Escalator
        var counters: FlowspecCounters?
        /// Per target, the kernel's counts at the last two ticks: the rate is taken over about a
        /// second (two ticks), so a sender's stall of a few hundred milliseconds does not restart
        /// the hold, while the hold is still measured in half seconds.
        var lastCounts: [Escalator.Target: [(packets: UInt64, at: Double)]] = [:]
        /// Per target, the queues whose engines report the attack (one engine per queue).
        var reporting: [Escalator.Target: Set<UInt16>] = [:]
        var syncedGeneration: UInt64 = 0
        var lastSession = ""
        var sessionDownSince: Double
        var sessionAlarm = false
        var ticks = 0
        var countersFailed = false
        /// Routes whose withdrawal the speaker refused, with the speaker's start (`generation`)
        /// they were refused by: tried again at every look at the speaker and listed by
        /// `flowspec show` until it takes them, so none stays announced unseen.
        var unwithdrawn: [(route: FlowspecRoute, generation: UInt64)] = []
    }
    private let escalation: SerialState<Escalation>
    let speaker: GoBGPSpeaker

    /// What the escalation counts, for the metrics thread.
    enum Counter: Int, CaseIterable {
        /// Gauges: the session to the upstream established; routes announced now.
        case sessionUp, routesNow
        case announcements, withdrawals, errors, sessionFailures
    }
    private let counts = Tally<Counter>()
    /// Per `Escalator.RefusalReason`, in `allCases` order.
    private let refused = Mutex<[UInt64]>(Array(repeating: 0, count: Escalator.RefusalReason.allCases.count))

    /// How long a session may stay down before it is reported as a failure: a first connect
    /// takes a few seconds (connect-retry 5 s on our side, the peer's own delays).
    static let sessionGrace = 30.0
    static let tick = 0.5

    /// `linger`: the arming timeout (a quiet prefix stays armed, and watched, that long).
    init(config: FlowspecConfig, logger: Logger, dryRun: Bool, queueCount: Int, linger: Double) {
        self.logger = logger
        self.dryRun = dryRun
        self.queueCount = queueCount
        self.config = config
        escalation = SerialState(label: "reflectguard.flowspec",
                                 Escalation(escalator: Escalator(config: config, linger: linger), sessionDownSince: Self.now()))
        speaker = GoBGPSpeaker(config: config, onEvent: { [logger] e in
            switch e {
            case .started(let pid):
                logger.info("flowspec-speaker-started", [("pid", .from(Int(pid)))])
            case .exited(let code, let restartIn, let log):
                logger.error("flowspec-speaker-exited", [("code", .from(Int(code))), ("restart_in_s", .double(restartIn)),
                                                         ("speaker_log", .string(log))])
            case .startFailed(let why):
                logger.error("flowspec-speaker-failed", [("error", .string(why))])
            }
        })
    }

    static func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

    private func fields(_ c: FlowspecConfig) -> [(String, LogValue)] {
        var speakerText = "gobgpd (child)"
        if case .external(let api) = c.speaker { speakerText = "external at \(api)" }
        return [("peer", .string(c.peer.description)), ("peer_as", .from(Int(c.peerAS))), ("local_as", .from(Int(c.localAS))),
                ("speaker", .string(speakerText)), ("trigger_pps", .double(c.trigger)), ("hold_s", .double(c.hold)),
                ("withdraw_s", .double(c.withdrawAfter)), ("rate_bytes", .double(c.rate)), ("max_rules", .from(c.maxRules))]
    }

    /// Starts the speaker and the once-a-second tick. After the agent dropped its privileges
    /// and is threaded anyway (the speaker's supervising thread is one of its threads).
    func start() {
        let c = config
        logger.info("flowspec-start", fields(c) + [("dry_run", .bool(dryRun)), ("directory", .string(speaker.directory))])
        escalation.sync { [self] s in
            do throws(NftError) {
                let k = try FlowspecCounters()
                try k.clear()
                s.counters = k
            } catch {
                s.countersFailed = true
                counts.add(.errors)
                logger.error("flowspec-error", [("error", .string("kernel counts unavailable, the engines' rates alone decide: \(error)"))])
            }
        }
        if !dryRun {
            do throws(FlowspecError) {
                try speaker.start()
            } catch {
                counts.add(.errors)
                logger.error("flowspec-speaker-missing", [("error", .string(error.message)),
                                                         ("detail", .string("no Flowspec escalation; local protection is unaffected"))])
            }
        }
        // Twice a second: the hold is measured in these steps (a route reaches the upstream
        // within hold + 2 s of the flood's start, the bound, with room for a loaded box).
        escalation.every(Self.tick, after: Self.tick) { [weak self] in self?.tick(&$0) }
    }

    /// Stops the tick and the speaker: its session closes and the upstream withdraws the routes.
    func stop() {
        escalation.stop { [self] s in
            let routes = s.escalator.announced + s.unwithdrawn.map(\.route)
            if !routes.isEmpty, !dryRun {
                // The agent's own gobgpd takes them along when it stops (its session closes); an
                // operator's speaker keeps running and must be told.
                if !speaker.runsDaemon {
                    for r in routes {
                        do throws(FlowspecError) { try speaker.withdraw(r) } catch {
                            counts.add(.errors)
                            logger.error("flowspec-error", [("route", .string(r.description)), ("error", .string(error.message))])
                        }
                    }
                }
                logger.warning("flowspec-withdraw", [("routes", .strings(routes.map(\.description))),
                                                     ("reason", .string(speaker.runsDaemon ? "agent stopping (session closed)" : "agent stopping"))])
                counts.add(.withdrawals, UInt64(routes.count))
            }
            try? s.counters?.clear()
        }
        speaker.stop()
    }

    /// The engines' attack events (a worker's batch, from KernelEnforcement.submit).
    func submit(_ events: [AttackEvent], queue workerQueue: UInt16) {
        escalation.async { [self] s in
            let now = Self.now()
            for e in events {
                let t = Escalator.Target(prefix: e.prefix, vector: e.vector)
                var q = s.reporting[t] ?? []
                if e.kind == .started { q.insert(workerQueue) } else { q.remove(workerQueue) }
                s.reporting[t] = q.isEmpty ? nil : q
                // An attack ends for the escalation when no engine reports it any more.
                if e.kind == .ended, !q.isEmpty { continue }
                perform(s.escalator.attack(e.kind, t, rate: e.agentRate(queues: queueCount), now: now), &s)
            }
        }
    }

    private func tick(_ s: inout Escalation) {
        let now = Self.now()
        s.ticks += 1
        var rates: [Escalator.Target: Double] = [:]
        var since: [Escalator.Target: Double] = [:]
        var ports: [Escalator.Target: SourcePortCounts] = [:]
        if let counters = s.counters {
            do throws(NftError) {
                // Source ports once a second, and only while a SYN-ACK route may be announced
                // (its ports are chosen then): a full port set takes a noticeable part of a
                // second to list on a loaded router, and these ticks measure the hold.
                // A table applied by an older version has no port sets: its routes match any
                // port, and the rates still count.
                let awaiting = s.escalator.awaitingAnnouncement
                if s.ticks % 2 == 0 || awaiting.contains(where: { s.escalator.sourcePorts($0) == nil }) {
                    for family in Set(awaiting.map { $0.prefix.isIPv4 ? 4 : 6 }).sorted() {
                        guard let counted = try? counters.readPorts(family: family) else { continue }
                        for t in awaiting where (t.prefix.isIPv4 ? 4 : 6) == family {
                            if let c = counted[t.prefix] { ports[t] = SourcePortCounts(total: c.total, perPort: c.perPort) }
                        }
                    }
                }
                let kernel = try counters.read()
                for t in s.escalator.watched {
                    guard let n = kernel[t.prefix]?[t.vector == .synack ? .synack : .rst] else { continue }
                    var samples = s.lastCounts[t] ?? []
                    if let base = samples.first, n >= base.packets, now > base.at {
                        rates[t] = Double(n - base.packets) / (now - base.at)
                        since[t] = base.at
                    } else {
                        samples = []   // the element was re-added: counting starts again
                    }
                    samples.append((n, now))
                    s.lastCounts[t] = Array(samples.suffix(2))
                }
                s.countersFailed = false
            } catch {
                if !s.countersFailed {
                    counts.add(.errors)
                    logger.error("flowspec-error", [("error", .string("reading kernel counts: \(error)"))])
                }
                s.countersFailed = true
            }
        }
        perform(s.escalator.tick(now: now, kernelRates: rates, measuredSince: since, sourcePorts: ports), &s)
        if !dryRun { checkSpeaker(now, &s) }
    }

    /// Session state, and the routes again after the speaker (re)started with an empty table.
    private func checkSpeaker(_ now: Double, _ s: inout Escalation) {
        let running = !speaker.runsDaemon || speaker.generation.load(ordering: .acquiring) > 0
        guard running else { return }
        // Every two seconds: each look runs the CLI (a fork and a gRPC call).
        guard s.ticks % 4 == 0 else { return }
        let state: String
        do throws(FlowspecError) { state = try speaker.sessionState() } catch { state = "unreachable: \(error.message)" }
        let up = state == "established"
        counts.set(.sessionUp, up ? 1 : 0)
        if state != s.lastSession {
            let f: [(String, LogValue)] = [("state", .string(state)), ("previous", .string(s.lastSession.isEmpty ? "none" : s.lastSession)),
                                           ("peer", .string(s.escalator.config.peer.description))]
            if up { logger.info("flowspec-session", f) } else { logger.warning("flowspec-session", f) }
            s.lastSession = state
        }
        if up {
            s.sessionDownSince = now
            s.sessionAlarm = false
        } else if !s.sessionAlarm, now - s.sessionDownSince >= Self.sessionGrace {
            s.sessionAlarm = true
            counts.add(.sessionFailures)
            logger.error("flowspec-session-down", [
                ("peer", .string(s.escalator.config.peer.description)), ("peer_as", .from(Int(s.escalator.config.peerAS))),
                ("state", .string(state)), ("down_s", .double(now - s.sessionDownSince)),
                ("speaker_log", .string(speaker.runsDaemon ? speaker.lastLog() : "")),
                ("detail", .string("no route can reach the upstream (peer unreachable, wrong AS, or refused); local protection is unaffected")),
            ])
        }
        let generation = speaker.generation.load(ordering: .acquiring)
        if !s.unwithdrawn.isEmpty {
            let before = s.unwithdrawn.count
            s.unwithdrawn = s.unwithdrawn.filter { r in
                // The agent's own gobgpd started again since: the route went with the old one.
                if speaker.runsDaemon, r.generation != generation { return false }
                do throws(FlowspecError) { try speaker.withdraw(r.route) } catch { return true }
                logger.info("flowspec-withdraw", Self.fields(r.route) + [("reason", .string("retried"))])
                return false
            }
            if s.unwithdrawn.count != before { publish(s) }
        }
        if generation != s.syncedGeneration {
            let routes = s.escalator.announced
            do throws(FlowspecError) {
                for r in routes { try speaker.announce(r) }
                s.syncedGeneration = generation
                if !routes.isEmpty {
                    logger.warning("flowspec-resync", [("routes", .strings(routes.map(\.description)))])
                }
            } catch {
                // The API may not listen yet; the next look tries again.
                if up { counts.add(.errors) }
            }
        }
    }

    private func perform(_ actions: [Escalator.Action], _ s: inout Escalation) {
        var changed = false
        for a in actions {
            switch a {
            case .watch(let t):
                s.lastCounts[t] = nil
                do throws(NftError) {
                    try s.counters?.watch(t.prefix, t.vector == .synack ? .synack : .rst)
                    // A fresh element counts from zero: the first tick has a rate already.
                    s.lastCounts[t] = [(0, Self.now())]
                } catch {
                    counts.add(.errors)
                    logger.error("flowspec-error", [("error", .string("\(error)")), ("prefix", .string(t.prefix.description))])
                }
            case .unwatch(let t):
                try? s.counters?.unwatch(t.prefix, t.vector == .synack ? .synack : .rst)
                s.lastCounts[t] = nil
            case .announce(let r, let rate, let ports):
                changed = true
                let f = Self.fields(r) + [("rate_pps", .double(rate)), ("action", .string(r.action))] + Self.fields(ports)
                if dryRun {
                    report("would announce \(r)", "flowspec-would-announce", f)
                    continue
                }
                send(r, "flowspec-announce", f, &s)
            case .withdraw(let r, let quiet):
                changed = true
                retire(r, Self.fields(r) + [("quiet_s", .double(quiet))], &s)
            case .retract(let r, let reason):
                changed = true
                retire(r, Self.fields(r) + [("reason", .string("reload: \(reason)"))], &s)
            case .replace(let old, let new, let ports):
                changed = true
                let f = Self.fields(new) + [("previous", .string(old.description)), ("action", .string(new.action)),
                                            ("reason", .string("reload"))] + Self.fields(ports)
                if dryRun {
                    report("would replace \(old) with \(new)", "flowspec-would-replace", f)
                    continue
                }
                // The new route first: for the same match the speaker replaces the path (one
                // UPDATE upstream, no gap); for other ports the old one goes once the new stands.
                send(new, "flowspec-replace", f, &s)
                if !old.sameMatch(new) { withdraw(old, f, &s) }
            case .refuse(let t, let reason, let detail, let rate):
                refused.withLock { $0[Escalator.RefusalReason.allCases.firstIndex(of: reason)!] += 1 }
                logger.warning("flowspec-refused", [("prefix", .string(t.prefix.description)), ("vector", .string(t.vector.rawValue)),
                                                    ("reason", .string(reason.rawValue)), ("detail", .string(detail)),
                                                    ("rate_pps", .double(rate))])
            }
        }
        if changed { publish(s) }
    }

    /// Dry-run: what would be done, on standard output and as an event; nothing else.
    private func report(_ text: String, _ event: String, _ f: [(String, LogValue)]) {
        print("flowspec: \(text)")
        StandardStreams.flushOutput()
        logger.warning(event, f + [("dry_run", .bool(true))])
    }

    private func send(_ r: FlowspecRoute, _ event: String, _ f: [(String, LogValue)], _ s: inout Escalation) {
        counts.add(.announcements)
        do throws(FlowspecError) {
            try speaker.announce(r)
            logger.warning(event, f)
        } catch {
            counts.add(.errors)
            s.syncedGeneration = 0   // try again at the next look at the speaker
            logger.error("flowspec-error", f + [("error", .string(error.message))])
        }
    }

    /// A route withdrawn (its flood over, or a reload's policy refuses it), or in a dry run
    /// reported.
    private func retire(_ r: FlowspecRoute, _ f: [(String, LogValue)], _ s: inout Escalation) {
        if dryRun {
            print("flowspec: would withdraw \(r)")
            StandardStreams.flushOutput()
            logger.info("flowspec-would-withdraw", f + [("dry_run", .bool(true))])
        } else {
            withdraw(r, f, &s)
        }
    }

    /// A route's own fields, first in each of its events.
    private static func fields(_ r: FlowspecRoute) -> [(String, LogValue)] {
        [("route", .string(r.description)), ("prefix", .string(r.prefix.description)), ("vector", .string(r.vector.rawValue))]
    }

    private func withdraw(_ r: FlowspecRoute, _ f: [(String, LogValue)], _ s: inout Escalation) {
        counts.add(.withdrawals)
        do throws(FlowspecError) {
            try speaker.withdraw(r)
            logger.info("flowspec-withdraw", f)
        } catch {
            counts.add(.errors)
            s.unwithdrawn.append((r, speaker.generation.load(ordering: .acquiring)))
            logger.error("flowspec-error", f + [("error", .string(error.message)), ("detail", .string("withdrawal retried every 2 s"))])
        }
    }

    /// The routes announced now, for `flowspec show` and the gauge.
    private func publish(_ s: Escalation) {
        counts.set(.routesNow, dryRun ? 0 : UInt64(s.escalator.announced.count + s.unwithdrawn.count))
        if !dryRun { try? speaker.publish(s.escalator.announced, unwithdrawn: s.unwithdrawn.map(\.route)) }
    }

    /// How a route's source ports were chosen, for its event.
    private static func fields(_ c: SourcePortChoice) -> [(String, LogValue)] {
        [("source_ports", .strings(c.ports.map { String($0) })), ("port_decision", .string(c.decision.rawValue)),
         ("port_share", .double((c.share * 1000).rounded() / 1000)), ("port_sample", .from(c.sample))]
    }

    /// The policy in force (the start's, or the last reload's).
    var escalatorConfig: FlowspecConfig { escalation.sync { $0.escalator.config } }

    /// A reload's Flowspec policy (SIGHUP, `reflectguard reload`), applied before the reload
    /// answers: the announced routes become what the new policy allows (`Escalator.reconfigure`).
    /// The caller has checked that the session's settings are unchanged. Returns a summary.
    func reconfigure(_ new: FlowspecConfig) -> String {
        escalation.sync { [self] s in
            let actions = s.escalator.reconfigure(new)
            perform(actions, &s)
            var retracted = 0, replaced = 0
            for a in actions {
                if case .retract = a { retracted += 1 } else if case .replace = a { replaced += 1 }
            }
            logger.info("flowspec-reload", fields(new) + [("withdrawn", .from(retracted)), ("replaced", .from(replaced)),
                                                          ("announced", .from(s.escalator.announced.count))])
            return "flowspec: \(s.escalator.announced.count) route(s) announced, \(retracted) withdrawn, \(replaced) replaced"
        }
    }

    func renderMetrics() -> String {
        var out = ""
        out += MetricsRegistry.single("reflectguard_flowspec_session_up", "gauge", "1 while the BGP session to the Flowspec upstream is established.",
              counts[.sessionUp])
        out += MetricsRegistry.single("reflectguard_flowspec_speaker_running", "gauge", "1 while the agent's own gobgpd runs (external speaker: 1).",
              speaker.runsDaemon ? (speaker.generation.load(ordering: .relaxed) > 0 && speaker.isRunning ? 1 : 0) : 1)
        out += MetricsRegistry.single("reflectguard_flowspec_speaker_restarts_total", "counter", "Times the agent's gobgpd died and was started again.",
              speaker.restarts.load(ordering: .relaxed))
        out += MetricsRegistry.single("reflectguard_flowspec_routes_announced", "gauge", "Flowspec routes announced now.", counts[.routesNow])
        out += MetricsRegistry.single("reflectguard_flowspec_announcements_total", "counter", "Flowspec routes announced.", counts[.announcements])
        out += MetricsRegistry.single("reflectguard_flowspec_withdrawals_total", "counter", "Flowspec routes withdrawn.", counts[.withdrawals])
        out += MetricsRegistry.single("reflectguard_flowspec_session_failures_total", "counter",
              "Times the session stayed down past 30 s (unreachable peer, wrong AS, refused).", counts[.sessionFailures])
        out += MetricsRegistry.single("reflectguard_flowspec_errors_total", "counter", "Speaker or kernel-count operations that failed.",
              counts[.errors])
        out += MetricsRegistry.family("reflectguard_flowspec_refused_total", "counter",
                                      "Escalations refused: outside-protected, too-wide (flowspec_widest_v4/v6), max-rules.")
        let counts = refused.withLock { $0 }
        for (r, n) in zip(Escalator.RefusalReason.allCases, counts) {
            out += "reflectguard_flowspec_refused_total{reason=\"\(r.rawValue)\"} \(n)\n"
        }
        return out
    }
}
