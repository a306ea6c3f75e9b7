import PacketParser
import Rules
import VerdictEngine

/// The escalation policy, read from the ruleset's `flowspec_*` defines (DefineTable has checked
/// each value on its own; this checks what only makes sense together). Nil from `init(values:)`
/// when `flowspec_peer` is empty: escalation is off.
public struct FlowspecConfig: Sendable, Equatable {
    public enum Speaker: Sendable, Equatable {
        /// The agent runs Debian's gobgpd as its child.
        case gobgpd
        /// An operator's gobgpd, reached at its API (`HOST:PORT` or `unix:///PATH`).
        case external(api: String)
    }

    public var peer: IPAddress
    public var peerAS: UInt32
    public var localAS: UInt32
    /// nil: derived (`flowspec_router_id = auto`).
    public var routerID: IPAddress?
    /// Attack packets per second to one prefix above which it is escalated.
    public var trigger: Double
    /// Seconds above the trigger before a route is announced.
    public var hold: Double
    /// Seconds below the trigger before a route is withdrawn.
    public var withdrawAfter: Double
    /// traffic-rate in bytes per second; 0: discard.
    public var rate: Double
    public var maxRules: Int
    /// Most source ports in a SYN-ACK route's match (0: never a port match), and the share of
    /// the flood, 0...1, they must carry together (`SourcePortChoice.choose`).
    public var maxPorts: Int
    public var portShare: Double
    /// Shortest prefix lengths ever announced.
    public var widestV4: Int
    public var widestV6: Int
    public var speaker: Speaker
    /// Routes are announced only inside these.
    public var protected: PrefixSet

    public init(peer: IPAddress, peerAS: UInt32, localAS: UInt32, routerID: IPAddress? = nil,
                trigger: Double = 100_000, hold: Double = 10, withdrawAfter: Double = 300, rate: Double = 125_000,
                maxRules: Int = 8, maxPorts: Int = 4, portShare: Double = 0.95, widestV4: Int = 24, widestV6: Int = 48,
                speaker: Speaker = .gobgpd, protected: PrefixSet) {
        self.peer = peer; self.peerAS = peerAS; self.localAS = localAS; self.routerID = routerID
        self.trigger = trigger; self.hold = hold; self.withdrawAfter = withdrawAfter; self.rate = rate
        self.maxRules = maxRules; self.maxPorts = maxPorts; self.portShare = portShare; self.widestV4 = widestV4; self.widestV6 = widestV6
        self.speaker = speaker; self.protected = protected
    }

    /// Reads the defines (`ResolvedRules.values`). Throws, naming the define, for a combination
    /// that cannot work (a peer without AS numbers, an external speaker without its API).
    public init?(values: [String: String], protected: PrefixSet) throws(FlowspecConfigError) {
        let peerText = DefineTable.unquoted(values["flowspec_peer"] ?? "\"\"")
        guard !peerText.isEmpty else { return nil }
        guard let peer = IPAddress(peerText) else {
            throw FlowspecConfigError(define: "flowspec_peer", "'\(peerText)' is not an address")
        }
        func number(_ name: String, _ fallback: Double) -> Double { DefineTable.number(name, in: values) ?? fallback }
        let peerAS = UInt32(number("flowspec_peer_as", 0)), localAS = UInt32(number("flowspec_local_as", 0))
        guard peerAS != 0 else { throw FlowspecConfigError(define: "flowspec_peer_as", "required with flowspec_peer (the upstream's AS)") }
        guard localAS != 0 else { throw FlowspecConfigError(define: "flowspec_local_as", "required with flowspec_peer (this router's AS)") }
        var routerID: IPAddress? = nil
        if let r = values["flowspec_router_id"], r != "auto" {
            guard let a = IPAddress(r), a.isIPv4Mapped, a.v4Value != 0 else {
                throw FlowspecConfigError(define: "flowspec_router_id", "'\(r)' is not a non-zero IPv4 address")
            }
            routerID = a
        }
        var speaker = Speaker.gobgpd
        if values["flowspec_speaker"] == "external" {
            let api = DefineTable.unquoted(values["flowspec_api"] ?? "\"\"")
            guard !api.isEmpty else {
                throw FlowspecConfigError(define: "flowspec_api", "required with flowspec_speaker = external (e.g. \"127.0.0.1:50051\")")
            }
            speaker = .external(api: api)
        }
        let defaults = FlowspecConfig(peer: peer, peerAS: peerAS, localAS: localAS, protected: protected)
        self.init(peer: peer, peerAS: peerAS, localAS: localAS, routerID: routerID,
                  trigger: number("flowspec_trigger", defaults.trigger), hold: number("flowspec_hold", defaults.hold),
                  withdrawAfter: number("flowspec_withdraw", defaults.withdrawAfter),
                  rate: number("flowspec_rate", defaults.rate),
                  maxRules: Int(number("flowspec_max_rules", Double(defaults.maxRules))),
                  maxPorts: Int(number("flowspec_max_ports", Double(defaults.maxPorts))),
                  portShare: number("flowspec_port_share", defaults.portShare * 100) / 100,
                  widestV4: Int(number("flowspec_widest_v4", Double(defaults.widestV4))),
                  widestV6: Int(number("flowspec_widest_v6", Double(defaults.widestV6))),
                  speaker: speaker, protected: protected)
    }

    /// Whether `other` talks to the same upstream the same way: same peer, AS numbers, router
    /// ID and speaker. Only the rest (when and what to announce) can change under a running
    /// session; a new session needs a new speaker, which a restart of the agent gives cleanly.
    public func sameSession(as other: FlowspecConfig) -> Bool {
        peer == other.peer && peerAS == other.peerAS && localAS == other.localAS && routerID == other.routerID
            && speaker == other.speaker
    }

    /// Why `prefix` may never be announced, or nil when it may: never 0/0, never wider than the
    /// configured length, only inside a protected network (an upstream filter on somebody else's
    /// addresses is the attacker's work done for him).
    public func refusal(_ prefix: CIDR) -> String? {
        let v4 = prefix.isIPv4
        let length = v4 ? Int(prefix.length) - 96 : Int(prefix.length)
        if length == 0 { return "0/0 is never announced" }
        let widest = v4 ? widestV4 : widestV6
        if length < widest {
            return "wider than /\(widest) (flowspec_widest_\(v4 ? "v4" : "v6"))"
        }
        let inside = protected.prefixes.contains { p in
            p.isIPv4 == v4 && p.length <= prefix.length && p.contains(prefix.address)
        }
        if !inside { return "outside the protected networks" }
        return nil
    }
}

/// A `flowspec_*` combination that cannot work, naming the define to fix.
public struct FlowspecConfigError: Error, CustomStringConvertible, Sendable {
    public var define: String
    public var message: String
    public init(define: String, _ message: String) { self.define = define; self.message = message }
    public var description: String { "\(define): \(message)" }
}
