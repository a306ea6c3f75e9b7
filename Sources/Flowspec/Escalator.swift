import VerdictEngine

/// The escalation policy as a state machine, no I/O: which victim prefixes to announce upstream
/// and when to withdraw them. Fed the engines' attack events and, once a second, the kernel's
/// per-prefix counts; answers with actions the agent carries out (watch a prefix in the kernel's
/// counting sets, announce, withdraw, report a refusal).
///
/// A prefix is escalated when its attack rate stays at or above `trigger` for `hold` seconds. The
/// rate is the larger of what the engines reported and what the kernel counted: once a prefix is
/// armed its flood never reaches the queues, and the engines alone would see it end. A route is
/// withdrawn when the rate has stayed below the trigger for `withdrawAfter` seconds.
public struct Escalator: Sendable {
    public struct Target: Hashable, Sendable, CustomStringConvertible {
        public var prefix: CIDR
        public var vector: AttackEvent.Vector
        public init(prefix: CIDR, vector: AttackEvent.Vector) { self.prefix = prefix; self.vector = vector }
        public var description: String { "\(prefix) \(vector.rawValue)" }
    }

    public enum Action: Equatable, Sendable {
        /// Start counting the target's attack packets in the kernel.
        case watch(Target)
        /// Stop counting: the target is forgotten.
        case unwatch(Target)
        /// `rate`: the packets per second that decided it; `ports`: how its source ports were
        /// chosen.
        case announce(FlowspecRoute, rate: Double, ports: SourcePortChoice)
        /// `quiet`: seconds the rate had stayed below the trigger.
        case withdraw(FlowspecRoute, quiet: Double)
        /// A reload's policy no longer allows the route (`reason` says which rule).
        case retract(FlowspecRoute, reason: String)
        /// A reload changed what the route carries (its action, or its ports when the port
        /// settings changed): `new` replaces `old` upstream.
        case replace(old: FlowspecRoute, new: FlowspecRoute, ports: SourcePortChoice)
        /// Above the trigger for `hold`, but refused (reported once per episode).
        case refuse(Target, reason: RefusalReason, detail: String, rate: Double)
    }

    public enum RefusalReason: String, Sendable, CaseIterable {
        case outsideProtected = "outside-protected"
        case tooWide = "too-wide"
        case maxRules = "max-rules"
    }

    struct State {
        var engineActive = false
        /// Whole-agent rate the engines reported at the attack's start.
        var engineRate = 0.0
        var kernelRate = 0.0
        var aboveSince: Double? = nil
        var quietSince: Double? = nil
        var route: FlowspecRoute? = nil
        /// A refusal is reported once while the target is watched (a flood's dips would repeat it).
        var refused = false
        /// Last time the engines reported the attack or the rate was at the trigger.
        var lastActive = 0.0
        /// The kernel's source-port counts since the target was watched (SYN-ACK targets).
        var ports: SourcePortCounts? = nil
        /// How the announced route's ports were chosen.
        var portChoice: SourcePortChoice? = nil
    }

    public private(set) var config: FlowspecConfig
    /// How long a quiet target stays watched: while a prefix stays armed (armed_timeout), a
    /// flood that comes back is dropped by the kernel before any engine sees it, and only the
    /// kernel's count can show it.
    public let linger: Double
    private var states: [Target: State] = [:]

    public init(config: FlowspecConfig, linger: Double = 60) {
        self.config = config
        self.linger = linger
    }

    /// Routes announced now, sorted (prefix text, then vector).
    public var announced: [FlowspecRoute] {
        states.values.compactMap(\.route).sorted { ($0.prefix.description, $0.vector.rawValue) < ($1.prefix.description, $1.vector.rawValue) }
    }

    /// Targets whose kernel counts the agent should read.
    public var watched: [Target] { Array(states.keys) }

    /// SYN-ACK targets above the trigger and not announced yet: those a coming tick may
    /// announce, whose source ports it needs.
    public var awaitingAnnouncement: [Target] {
        states.filter { $0.key.vector == .synack && $0.value.route == nil && $0.value.aboveSince != nil }.map(\.key)
    }

    /// The last source-port counts `tick` was given for a target.
    public func sourcePorts(_ t: Target) -> SourcePortCounts? { states[t]?.ports }

    /// An engine's attack event; `rate` is the whole agent's (AttackEvent.agentRate). `now` in
    /// seconds on any monotonic clock.
    public mutating func attack(_ kind: AttackEvent.Kind, _ target: Target, rate: Double, now: Double) -> [Action] {
        switch kind {
        case .started:
            let fresh = states[target] == nil
            var s = states[target] ?? State()
            s.engineActive = true
            s.engineRate = rate
            states[target] = s
            return (fresh ? [.watch(target)] : []) + evaluate(target, now: now)
        case .ended:
            guard var s = states[target] else { return [] }
            s.engineActive = false
            s.engineRate = 0
            s.lastActive = now   // the engines reported it until now
            states[target] = s
            return evaluate(target, now: now)
        }
    }

    /// Once a second: the kernel's rates per watched target (a target missing counts 0), each
    /// measured since `measuredSince` (default `now`): a rate above the trigger has been above
    /// since its measurement began. `sourcePorts`: the kernel's port counts of SYN-ACK targets
    /// since they were watched (a target missing keeps its last counts).
    public mutating func tick(now: Double, kernelRates: [Target: Double], measuredSince: [Target: Double] = [:],
                              sourcePorts: [Target: SourcePortCounts] = [:]) -> [Action] {
        var actions: [Action] = []
        // Withdrawals first, so a slot they free can go to a prefix waiting in the same tick; then
        // in a fixed order, so the same inputs always give the same routes.
        let order = states.keys.sorted { (a, b) in
            let ra = states[a]!.route != nil, rb = states[b]!.route != nil
            return ra != rb ? ra : (a.prefix.description, a.vector.rawValue) < (b.prefix.description, b.vector.rawValue)
        }
        for t in order {
            states[t]!.kernelRate = kernelRates[t] ?? 0
            if let p = sourcePorts[t] { states[t]!.ports = p }
            actions += evaluate(t, now: now, measuredFrom: measuredSince[t] ?? now)
        }
        return actions
    }

    private mutating func evaluate(_ t: Target, now: Double, measuredFrom: Double? = nil) -> [Action] {
        guard var s = states[t] else { return [] }
        let rate = max(s.engineActive ? s.engineRate : 0, s.kernelRate)
        let above = rate >= config.trigger
        if above || s.engineActive { s.lastActive = now }
        var actions: [Action] = []
        if let route = s.route {
            if above {
                s.quietSince = nil
            } else {
                let since = s.quietSince ?? now
                s.quietSince = since
                if now - since >= config.withdrawAfter {
                    s.route = nil
                    s.quietSince = nil
                    s.aboveSince = nil
                    actions.append(.withdraw(route, quiet: now - since))
                }
            }
        } else if above {
            let since = s.aboveSince ?? measuredFrom ?? now
            s.aboveSince = since
            if now - since >= config.hold {
                // Checked every time (a slot freed under flowspec_max_rules goes to a prefix
                // still waiting), reported once while the target is watched.
                if let (reason, detail) = refusal(t) {
                    if !s.refused { actions.append(.refuse(t, reason: reason, detail: detail, rate: rate)) }
                    s.refused = true
                } else {
                    let ports = portChoice(t, s.ports)
                    let route = FlowspecRoute(prefix: t.prefix, vector: t.vector, rate: config.rate, sourcePorts: ports.ports)
                    s.route = route
                    s.portChoice = ports
                    s.quietSince = nil
                    actions.append(.announce(route, rate: rate, ports: ports))
                }
            }
        } else {
            s.aboveSince = nil
        }
        if s.route == nil, !s.engineActive, !above, now - s.lastActive >= linger {
            states[t] = nil
            actions.append(.unwatch(t))
        } else {
            states[t] = s
        }
        return actions
    }

    /// An RST flood's sources are forged at random: only a SYN-ACK route gets a port match.
    private func portChoice(_ t: Target, _ counts: SourcePortCounts?) -> SourcePortChoice {
        SourcePortChoice.choose(counts, maxPorts: t.vector == .synack ? config.maxPorts : 0, share: config.portShare)
    }

    /// A reload's policy (the session's settings unchanged: `FlowspecConfig.sameSession`). Every
    /// announced route is judged again as if it were announced now: withdrawn when the new policy
    /// refuses its prefix (no longer protected, too wide) or has fewer slots (the routes past
    /// `maxRules`, in the announced order, go), replaced when its action changes or, with new port
    /// settings, its ports. So what stays announced is exactly what the new policy would announce
    /// for the floods going on, and never a route of the old policy. Watched targets and their
    /// holds carry over.
    public mutating func reconfigure(_ new: FlowspecConfig) -> [Action] {
        let portsChanged = new.maxPorts != config.maxPorts || new.portShare != config.portShare
        config = new
        var actions: [Action] = []
        var kept = 0
        for route in announced {
            let t = Target(prefix: route.prefix, vector: route.vector)
            guard var s = states[t] else { continue }
            var why = config.refusal(t.prefix)
            if why == nil, kept >= config.maxRules { why = "flowspec_max_rules (\(config.maxRules)) routes announced already" }
            if let why {
                s.route = nil
                s.portChoice = nil
                s.aboveSince = nil
                s.quietSince = nil
                s.refused = false
                actions.append(.retract(route, reason: why))
            } else {
                kept += 1
                let ports = portsChanged ? portChoice(t, s.ports) : (s.portChoice ?? portChoice(t, s.ports))
                let next = FlowspecRoute(prefix: t.prefix, vector: t.vector, rate: config.rate,
                                         sourcePorts: portsChanged ? ports.ports : route.sourcePorts)
                if next != route {
                    s.route = next
                    s.portChoice = ports
                    actions.append(.replace(old: route, new: next, ports: ports))
                }
            }
            states[t] = s
        }
        return actions
    }

    private func refusal(_ t: Target) -> (RefusalReason, String)? {
        if let why = config.refusal(t.prefix) {
            return (why.hasPrefix("outside") ? .outsideProtected : .tooWide, why)
        }
        let n = states.values.filter { $0.route != nil }.count
        if n >= config.maxRules { return (.maxRules, "flowspec_max_rules (\(config.maxRules)) routes announced already") }
        return nil
    }
}
