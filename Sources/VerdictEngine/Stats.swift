/// Counters an engine keeps for reports and metrics. Reading them copies; the hot path only
/// increments plain integers.
public struct EngineStats: Sendable, Equatable {
    /// Decisions per reason (every reason present, zero when unused).
    public var reasons: [Reason: UInt64] = [:]
    public var decisions: UInt64 = 0
    /// Tracked flows (tracked SYNs, server-side handshakes, full-track flows): entries held,
    /// the capacity asked for, the slots allocated, live entries evicted when full, and bytes.
    public var flowEntries = 0
    public var flowCapacity = 0
    public var flowSlots = 0
    public var flowEvictions: UInt64 = 0
    public var flowTableBytes = 0
    /// Token buckets (RST per address and prefix, backscatter per source).
    public var bucketEntries = 0
    public var bucketEvictions: UInt64 = 0
    /// Prefixes currently under attack, and attack events lost because nobody drained them.
    public var activeAttacks = 0
    public var attackEventsLost: UInt64 = 0

    public init() {}

    public func count(_ reason: Reason) -> UInt64 { reasons[reason] ?? 0 }
    /// Bytes of table per tracked-flow slot (target ≤ 64).
    public var bytesPerFlow: Double { flowSlots == 0 ? 0 : Double(flowTableBytes) / Double(flowSlots) }
}

/// The start or end of a flood against one victim prefix (/24 IPv4, /64 IPv6), judged on this
/// engine's share of the traffic. The inline agent arms kernel enforcement for the prefix on
/// `started` and disarms on `ended`.
public struct AttackEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case started, ended }
    public var kind: Kind
    public var prefix: CIDR
    /// Packet time of the event.
    public var at: Nanoseconds
    /// When the attack started (equal to `at` for `started`).
    public var startedAt: Nanoseconds
    /// Unsolicited (dropped) SYN-ACKs and dropped RSTs per second to the prefix, seen by this
    /// engine (multiply by the queue count for the whole agent).
    public var synackDropRate: Double
    public var rstDropRate: Double

    public init(kind: Kind, prefix: CIDR, at: Nanoseconds, startedAt: Nanoseconds,
                synackDropRate: Double, rstDropRate: Double) {
        self.kind = kind; self.prefix = prefix; self.at = at; self.startedAt = startedAt
        self.synackDropRate = synackDropRate; self.rstDropRate = rstDropRate
    }
}

extension Reason {
    /// Dense index for the counter array (a switch compiles to a table lookup). Public so other
    /// per-packet counters (the scoring pipeline's) can count by reason without hashing it: a
    /// `Reason` hashes its String raw value.
    public var ordinal: Int {
        switch self {
        case .solicitedSynack: return 0
        case .unsolicitedSynack: return 1
        case .synackSent: return 2
        case .synackScorePass: return 3
        case .synackScoreDrop: return 4
        case .synTracked: return 5
        case .rstRefused: return 6
        case .rstTracked: return 7
        case .rstExact: return 8
        case .rstInWindow: return 9
        case .rstOutOfWindow: return 10
        case .rstWithinRate: return 11
        case .rstRateLimit: return 12
        case .rstSent: return 13
        case .backscatter: return 14
        case .backscatterRateLimit: return 15
        case .spoofedSource: return 16
        case .allowlisted: return 17
        case .notProtected: return 18
        case .notQueued: return 19
        case .notTCP: return 20
        case .malformed: return 21
        case .flowTracked: return 22
        case .flowUntracked: return 23
        case .unreadableHeader: return 24
        }
    }
    public static let ordinalCount = 25
}
