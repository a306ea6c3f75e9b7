import VerdictEngine

/// One Flowspec route the agent announces: destination = the victim prefix, protocol 6, the
/// TCP flags of the flood (SYN and ACK both set; or RST set), and, when a few reflected services
/// carry nearly all of a SYN-ACK flood, their source ports; with the traffic-rate action
/// (RFC 8955 §7.3, bytes per second; 0 discards). IPv4 routes go in the ipv4-flowspec family
/// (RFC 8955), IPv6 ones in ipv6-flowspec (RFC 8956), where the protocol is the next header.
public struct FlowspecRoute: Hashable, Sendable, CustomStringConvertible {
    public var prefix: CIDR
    public var vector: AttackEvent.Vector
    public var rate: Double
    /// Source ports the route matches, ascending, no repeats; empty: any port. They are part of
    /// the route's identity (its NLRI): the same prefix with other ports is another route.
    public var sourcePorts: [UInt16]

    public init(prefix: CIDR, vector: AttackEvent.Vector, rate: Double, sourcePorts: [UInt16] = []) {
        self.prefix = prefix; self.vector = vector; self.rate = rate
        self.sourcePorts = Array(Set(sourcePorts)).sorted()
    }

    public var isIPv4: Bool { prefix.isIPv4 }

    /// TCP flags value and mask as BIRD prints them (`tcp flags 0x12/0x12`): all of the value's
    /// bits set, whatever the others.
    public var tcpFlags: UInt8 { vector == .synack ? 0x12 : 0x04 }

    /// The route in BIRD's flow4/flow6 syntax, which operators read on the upstream's side too
    /// (components in BIRD's order, by type: dst, proto, sport, tcp flags), followed by the action.
    public var description: String {
        let proto = isIPv4 ? "proto 6" : "next header 6"
        let flags = String(tcpFlags, radix: 16)
        let ports = sourcePorts.isEmpty ? "" : " sport \(sourcePorts.map(String.init).joined(separator: ","));"
        return "flow\(isIPv4 ? 4 : 6) { dst \(prefix); \(proto);\(ports) tcp flags 0x\(flags)/0x\(flags); } \(action)"
    }

    /// `traffic-rate 125000` (bytes/s) or `discard`.
    public var action: String {
        rate == 0 ? "discard" : "traffic-rate \(Self.number(rate))"
    }

    /// A rate without a fraction when it has none (the extended community carries a 32-bit float).
    static func number(_ r: Double) -> String {
        r == r.rounded() && r < 1e15 ? String(Int64(r)) : String(r)
    }

    /// Whether the two match the same packets (the same NLRI): announcing one then replaces the
    /// other at the speaker, whatever their actions.
    public func sameMatch(_ other: FlowspecRoute) -> Bool {
        prefix == other.prefix && vector == other.vector && sourcePorts == other.sourcePorts
    }
}

/// A SYN-ACK flood's source ports, as the kernel counted them since its prefix was watched:
/// `total` is every attack SYN-ACK to the prefix, `perPort` what the bounded port set managed to
/// count. A port the set could not hold is missing from `perPort` but not from `total`, so a
/// share computed from these can only come out too low, never too high.
public struct SourcePortCounts: Equatable, Sendable {
    public var total: UInt64
    public var perPort: [UInt16: UInt64]
    public init(total: UInt64, perPort: [UInt16: UInt64]) { self.total = total; self.perPort = perPort }
}

/// Which source ports go into a SYN-ACK route, and why.
public struct SourcePortChoice: Equatable, Sendable {
    public enum Decision: String, Sendable {
        /// At most `flowspec_max_ports` ports carry at least `flowspec_port_share` of the flood.
        case dominant
        /// They do not: the flood comes from many services, the route matches any port.
        case spread
        /// Too few packets counted to judge (or none: the kernel's counts were unavailable).
        case tooFewPackets = "too-few-packets"
        /// `flowspec_max_ports = 0`, or an RST route.
        case off
    }
    /// Ascending; empty unless `decision` is `dominant`.
    public var ports: [UInt16]
    public var decision: Decision
    /// The share of the counted SYN-ACKs the top ports (up to the maximum) carry, 0...1.
    public var share: Double
    /// SYN-ACKs the share was judged on.
    public var sample: UInt64

    public init(ports: [UInt16], decision: Decision, share: Double, sample: UInt64) {
        self.ports = ports; self.decision = decision; self.share = share; self.sample = sample
    }

    /// Fewest packets a port match is judged on. With the smallest trigger and hold that make
    /// sense there are far more; this only keeps a handful of stray packets from deciding.
    public static let minimumSample: UInt64 = 1000

    /// The fewest top ports (most packets first, the lower port on a tie) whose packets reach
    /// `share` of `counts.total`, if `maxPorts` or fewer do; otherwise no port match. The match
    /// must cover nearly all of the flood: what it leaves out reaches the uplink unshed, and what
    /// it keeps out of the rule (SYN-ACKs from other services, legitimate ones among them) is
    /// exactly what a port match is for.
    public static func choose(_ counts: SourcePortCounts?, maxPorts: Int, share: Double) -> SourcePortChoice {
        guard maxPorts > 0 else { return SourcePortChoice(ports: [], decision: .off, share: 0, sample: counts?.total ?? 0) }
        guard let counts, counts.total >= minimumSample else {
            return SourcePortChoice(ports: [], decision: .tooFewPackets, share: 0, sample: counts?.total ?? 0)
        }
        let top = counts.perPort.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(maxPorts)
        let total = Double(counts.total)
        var covered: UInt64 = 0
        var ports: [UInt16] = []
        for (port, n) in top {
            covered += n
            ports.append(port)
            // One rule counts both, and the ports are read before the total: covered ≤ total.
            let reached = min(1, Double(covered) / total)
            if reached >= share {
                return SourcePortChoice(ports: ports.sorted(), decision: .dominant, share: reached, sample: counts.total)
            }
        }
        return SourcePortChoice(ports: [], decision: .spread, share: min(1, Double(covered) / total), sample: counts.total)
    }
}
