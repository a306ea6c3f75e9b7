import VerdictEngine

/// One Flowspec route the agent announces: destination = the victim prefix, protocol 6, and the
/// TCP flags of the flood (SYN and ACK both set; or RST set), with the traffic-rate action
/// (RFC 8955 §7.3, bytes per second; 0 discards). IPv4 routes go in the ipv4-flowspec family
/// (RFC 8955), IPv6 ones in ipv6-flowspec (RFC 8956), where the protocol is the next header.
public struct FlowspecRoute: Hashable, Sendable, CustomStringConvertible {
    public var prefix: CIDR
    public var vector: AttackEvent.Vector
    public var rate: Double

    public init(prefix: CIDR, vector: AttackEvent.Vector, rate: Double) {
        self.prefix = prefix; self.vector = vector; self.rate = rate
    }

    public var isIPv4: Bool { prefix.isIPv4 }

    /// TCP flags value and mask as BIRD prints them (`tcp flags 0x12/0x12`): all of the value's
    /// bits set, whatever the others.
    public var tcpFlags: UInt8 { vector == .synack ? 0x12 : 0x04 }

    /// The route in BIRD's flow4/flow6 syntax, which operators read on the upstream's side too,
    /// followed by the action.
    public var description: String {
        let proto = isIPv4 ? "proto 6" : "next header 6"
        let flags = String(tcpFlags, radix: 16)
        return "flow\(isIPv4 ? 4 : 6) { dst \(prefix); \(proto); tcp flags 0x\(flags)/0x\(flags); } \(action)"
    }

    /// `traffic-rate 125000` (bytes/s) or `discard`.
    public var action: String {
        rate == 0 ? "discard" : "traffic-rate \(Self.number(rate))"
    }

    /// A rate without a fraction when it has none (the extended community carries a 32-bit float).
    static func number(_ r: Double) -> String {
        r == r.rounded() && r < 1e15 ? String(Int64(r)) : String(r)
    }
}
