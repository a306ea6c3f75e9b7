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
    /// Prefixes and protected networks currently under an RST attack, and RST attacks started.
    public var activeRSTAttacks = 0
    public var rstAttacksStarted: UInt64 = 0
    public var attackEventsLost: UInt64 = 0
    /// `state = conntrack`: conntrack entries mirrored, and those evicted for room.
    public var conntrackEntries = 0
    public var conntrackEvictions: UInt64 = 0

    public init() {}

    public func count(_ reason: Reason) -> UInt64 { reasons[reason] ?? 0 }
    /// Bytes of table per tracked-flow slot (target ≤ 64).
    public var bytesPerFlow: Double { flowSlots == 0 ? 0 : Double(flowTableBytes) / Double(flowSlots) }
}

/// The start or end of a flood against one victim prefix (/24 IPv4, /64 IPv6; for an RST attack
/// also a whole protected network), judged on this engine's share of the traffic. The inline
/// agent arms kernel enforcement for the prefix on `started` and disarms on `ended`.
public struct AttackEvent: Sendable, Equatable {
    public enum Kind: String, Sendable { case started, ended }
    /// What floods the prefix: unsolicited SYN-ACKs (and RSTs dropped on tracked flows), or RSTs
    /// on flows nobody tracks above the prefix's learnt baseline.
    public enum Vector: String, Sendable { case synack, rst }
    public var kind: Kind
    public var vector: Vector
    public var prefix: CIDR
    /// Packet time of the event.
    public var at: Nanoseconds
    /// When the attack started (equal to `at` for `started`).
    public var startedAt: Nanoseconds
    /// Unsolicited (dropped) SYN-ACKs and dropped RSTs per second to the prefix, seen by this
    /// engine (multiply by the queue count for the whole agent). For an RST attack,
    /// `rstDropRate` is the untracked RSTs per second the prefix got, dropped or not.
    public var synackDropRate: Double
    public var rstDropRate: Double

    public init(kind: Kind, vector: Vector = .synack, prefix: CIDR, at: Nanoseconds, startedAt: Nanoseconds,
                synackDropRate: Double, rstDropRate: Double) {
        self.kind = kind; self.vector = vector; self.prefix = prefix; self.at = at; self.startedAt = startedAt
        self.synackDropRate = synackDropRate; self.rstDropRate = rstDropRate
    }
}

extension Reason {
    /// The one dense index of a reason, for every per-reason counter array (the engine's, the
    /// scoring pipeline's, the agent's metric slots): a `Reason` hashes its String raw value, too
    /// slow per packet. A switch, so the compiler checks every case is numbered (a cast of the
    /// enum's storage would trust its layout); numbered in declaration order, so it compiles to
    /// nothing: one case numbered out of order cost 17 instructions a decision (callgrind). A
    /// test checks it against `allCases`.
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
        case .rstInexact: return 10
        case .rstOutOfWindow: return 11
        case .rstWithinRate: return 12
        case .rstRateLimit: return 13
        case .rstSent: return 14
        case .backscatter: return 15
        case .backscatterRateLimit: return 16
        case .spoofedSource: return 17
        case .allowlisted: return 18
        case .notProtected: return 19
        case .notQueued: return 20
        case .notTCP: return 21
        case .malformed: return 22
        case .flowTracked: return 23
        case .flowUntracked: return 24
        case .unreadableHeader: return 25
        case .solicitedConntrack: return 26
        case .stateAwaited: return 27
        case .conntrackMissAccepted: return 28
        case .rstUnverified: return 29
        case .ipv4Mapped: return 30
        case .ipv4MappedSent: return 31
        }
    }
    public static let ordinalCount = 32
}
