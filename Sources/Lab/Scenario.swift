import PacketParser

/// What a generated frame is, for `--labels` (docs/output.md: `legit` or `attack-…`).
public enum FrameLabel: UInt8, CaseIterable, Sendable {
    /// Part of a real conversation: must never be dropped.
    case legit
    /// A reflector's SYN-ACK (and its retransmissions) answering a SYN forged with a protected
    /// source address.
    case attackSynack
    /// A spoofed RST of a flood.
    case attackRst
    /// A forged RST aimed at a live session (right 4-tuple, guessed sequence number).
    case attackBlindReset
    /// A protected host's own RST answering a reflected SYN-ACK. The host is honest, but the
    /// packet exists only because of the attack and carries no conversation anyone needs: it is
    /// the uplink waste of answering unsolicited SYN-ACKs, which the engine rate-limits
    /// (`backscatter-rate-limit`). Labelled as attack so that dropping it is not counted as a
    /// false drop; the scoring report lists it as its own label so it can be judged apart.
    case attackBackscatter

    public var token: String {
        switch self {
        case .legit: "legit"
        case .attackSynack: "attack-synack"
        case .attackRst: "attack-rst"
        case .attackBlindReset: "attack-blind-reset"
        case .attackBackscatter: "attack-backscatter"
        }
    }
}

public enum ScenarioKind: String, CaseIterable, Sendable {
    case legit
    case synackCarpet = "synack-carpet"
    case rstFlood = "rst-flood"
    case blindReset = "blind-reset"
    case mixed
}

/// A named scenario: a kind, captured in both directions or ingress only.
///
/// Every scenario is meant to be scored with the lab's protected networks:
/// `reflectguard score F.pcap --labels F.csv --protect 198.18.2.0/24 --protect 2001:db8:2::/64`.
public struct Scenario: Equatable, Sendable, CustomStringConvertible {
    public var kind: ScenarioKind
    /// Only frames towards the protected networks are written (asymmetric routing). The frames
    /// are exactly the inbound subset of the symmetric scenario with the same seed and size.
    public var ingressOnly: Bool

    public init(kind: ScenarioKind, ingressOnly: Bool = false) {
        self.kind = kind
        self.ingressOnly = ingressOnly
    }

    /// `legit`, `synack-carpet`, …, and each with `-ingress` appended.
    public init?(name: String) {
        var base = Substring(name)
        var ingress = false
        if base.hasSuffix("-ingress") {
            base = base.dropLast("-ingress".count)
            ingress = true
        }
        guard let k = ScenarioKind(rawValue: String(base)) else { return nil }
        self.init(kind: k, ingressOnly: ingress)
    }

    public var name: String { kind.rawValue + (ingressOnly ? "-ingress" : "") }
    public var description: String { name }

    public static let all: [Scenario] = ScenarioKind.allCases.flatMap {
        [Scenario(kind: $0), Scenario(kind: $0, ingressOnly: true)]
    }

    public var summary: String {
        let s: String
        switch kind {
        case .legit:
            s = "outbound and inbound sessions, IPv4/IPv6, VLAN tags, retransmitted SYNs and SYN-ACKs, FIN/RST endings, refused connections"
        case .synackCarpet:
            s = "legit plus reflected SYN-ACKs from thousands of reflectors across the protected prefixes, with reflector retransmissions and host backscatter"
        case .rstFlood:
            s = "legit plus a spoofed RST flood (random sources, ports, sequence numbers) to protected addresses"
        case .blindReset:
            s = "legit plus long-lived sessions hit by forged RSTs with the right 4-tuple (in-window and out-of-window guesses)"
        case .mixed:
            s = "all of the above at once"
        }
        return ingressOnly ? s + "; inbound direction only" : s
    }
}

/// The lab address plan (README, "Lab scenarios"): ranges reserved for benchmarks and documentation.
public enum LabAddresses {
    public static let protectedV4 = "198.18.2.0/24"
    public static let protectedV6 = "2001:db8:2::/64"
    /// The flags to score every scenario with.
    public static let protectArguments = ["--protect", protectedV4, "--protect", protectedV6]

    /// Whether `a` is in 198.18.2.0/24 or 2001:db8:2::/64.
    @inline(__always)
    public static func isProtected(_ a: IPAddress) -> Bool {
        let w = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        let high = UInt64(bigEndian: w[0]), low = UInt64(bigEndian: w[1])
        if high == 0 && low >> 32 == 0xffff { return low & 0xffff_ff00 == 0xc612_0200 }   // 198.18.2.0/24
        return high == 0x2001_0db8_0002_0000
    }

    static func protectedHost(_ n: UInt64, v6: Bool) -> IPAddress {
        v6 ? ipv6(0x2001_0db8_0002_0000, n) : IPAddress(v4: 198, 18, 2, UInt8(truncatingIfNeeded: n))
    }

    static func ipv6(_ high: UInt64, _ low: UInt64) -> IPAddress {
        var v = SIMD16<UInt8>()
        for i in 0..<8 {
            v[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            v[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return IPAddress(bytes: v)
    }

    /// The low byte of a protected address: host number in the /24, or the IID's last byte.
    static func hostByte(_ a: IPAddress) -> Int { Int(a.bytes[15]) }
}

/// Counts of a generated scenario.
public struct ScenarioStats: Sendable, Equatable {
    public var frames = 0
    public var perLabel: [FrameLabel: Int] = [:]
    /// Frame timestamps, nanoseconds since the epoch.
    public var firstTimestamp: Int64 = 0
    public var lastTimestamp: Int64 = 0
    public init() {}
}
