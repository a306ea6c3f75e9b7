import PacketParser

/// TCP states of the kernel's conntrack (`enum tcp_conntrack`, include/uapi/linux/netfilter/
/// nf_conntrack_tcp.h), as ctnetlink reports them in CTA_PROTOINFO_TCP_STATE.
public enum ConntrackTCPState: UInt8, Sendable {
    case none = 0, synSent, synRecv, established, finWait, closeWait, lastAck, timeWait, close, synSent2

    /// Whether a SYN-ACK answering the entry's original direction belongs to it: the SYN went out
    /// (SYN_SENT, or SYN_SENT2 for a simultaneous open), the SYN-ACK was seen already (SYN_RECV: a
    /// retransmission, or the router that forwarded the first one), or the handshake completed
    /// (ESTABLISHED: a retransmitted SYN-ACK whose ACK was lost). A closing or closed flow is
    /// not answered by a SYN-ACK.
    public var answersSynack: Bool {
        switch self {
        case .synSent, .synRecv, .established, .synSent2: return true
        default: return false
        }
    }
}

/// One fact about a TCP entry of the kernel's conntrack table, in its original direction
/// (the side that sent the first packet is `source`). The agent turns ctnetlink's dump and its
/// NEW / UPDATE / DESTROY events into these; the engine never talks to the kernel.
public struct ConntrackFact: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        /// The entry exists in `state` (a dump line, a NEW or an UPDATE event).
        case present
        /// The entry is gone (a DESTROY event).
        case gone
    }

    public var kind: Kind
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var state: ConntrackTCPState

    public init(_ kind: Kind, source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16,
                state: ConntrackTCPState) {
        self.kind = kind
        self.source = source; self.sourcePort = sourcePort
        self.destination = destination; self.destinationPort = destinationPort
        self.state = state
    }
}

/// A mirrored conntrack entry: the flow's canonical key, which endpoint opened it, its state.
struct ConntrackEntry: TableSlot {
    var a0: SIMD16<UInt8>
    var a1: SIMD16<UInt8>
    var lastSeen: UInt32
    var p0: UInt16
    var p1: UInt16
    var state: ConntrackTCPState
    /// Endpoint 0 of the key sent the original direction's first packet (the SYN).
    var openerIs0: Bool

    func hash(_ seed: KeyedHash) -> UInt64 { seed.hash(a0, a1, UInt64(p0) << 16 | UInt64(p1)) }

    @inline(__always)
    func hasKey(_ key: FlowKey) -> Bool {
        p0 == key.p0 && p1 == key.p1 && sameBytes(a0, key.a0) && sameBytes(a1, key.a1)
    }
}

/// Whether conntrack replication still delivers the other router's flows.
///
/// With the sync link named (`ct_sync_iface`), its traffic is the signal: conntrackd's FTFW mode
/// sends an alive message about once a second when it has nothing else to say (measured: one a
/// second on an idle lab link), so a link that receives nothing for `silence` has lost its peer
/// (the link cut, conntrackd stopped on the other router). Floods and quiet hours change nothing.
///
/// Without it, from what this router can see: replicated entries of outbound flows (a protected
/// host opened them) keep arriving while the protected side opens connections, and SYN-ACKs to
/// protected hosts keep coming back; no such state for `silence` while at least `misses` SYN-ACKs
/// found none reads as stalled. That reading is wrong when the protected side opens nothing while
/// a flood arrives: then SYN-ACKs without state get `ct_miss` (by default the evidence score)
/// until state arrives again, a fallback, never an outage.
///
/// Pure bookkeeping fed by the agent (times in monotonic nanoseconds).
public struct ReplicationWatch: Sendable {
    public enum Change: Equatable, Sendable {
        case stalled(reason: String)
        case restored(reason: String)
    }

    public let silence: Nanoseconds
    public let misses: UInt64
    /// Judged by the sync link's traffic (`syncTraffic`) rather than by the flows.
    public let watchesLink: Bool
    public private(set) var healthy = true
    public private(set) var lastState: Nanoseconds
    public private(set) var lastSync: Nanoseconds
    private var unmatchedSinceState: UInt64 = 0
    public private(set) var stalls: UInt64 = 0

    public init(start: Nanoseconds, watchesLink: Bool = false, silence: Nanoseconds = 2_000_000_000, misses: UInt64 = 3) {
        self.silence = silence
        self.misses = misses
        self.watchesLink = watchesLink
        lastState = start
        lastSync = start
    }

    /// A fact (present or gone) about a flow a protected host opened.
    public mutating func stateArrived(at now: Nanoseconds) -> Change? {
        lastState = max(lastState, now)
        unmatchedSinceState = 0
        guard !healthy else { return nil }
        if watchesLink && now - lastSync >= silence { return nil }
        healthy = true
        return .restored(reason: "replicated conntrack state arrives again")
    }

    /// The sync link received packets since the last look.
    public mutating func syncTraffic(at now: Nanoseconds) -> Change? {
        lastSync = max(lastSync, now)
        guard watchesLink, !healthy else { return nil }
        healthy = true
        return .restored(reason: "the sync link receives conntrackd's messages again")
    }

    /// SYN-ACKs to protected hosts that found no state (held to the end, or judged at once).
    public mutating func unmatched(_ n: UInt64) {
        unmatchedSinceState &+= n
    }

    public mutating func evaluate(at now: Nanoseconds) -> Change? {
        guard healthy else { return nil }
        let reason: String
        if watchesLink {
            guard now - lastSync >= silence else { return nil }
            reason = "the sync link received nothing for \(Self.seconds(now - lastSync)) s (conntrackd sends at least one message a second)"
        } else {
            guard now - lastState >= silence, unmatchedSinceState >= misses else { return nil }
            reason = "no replicated conntrack state of an outbound flow for \(Self.seconds(now - lastState)) s while \(unmatchedSinceState) SYN-ACKs to protected hosts found none"
        }
        healthy = false
        stalls &+= 1
        return .stalled(reason: reason)
    }

    private static func seconds(_ ns: Nanoseconds) -> Double { (Double(ns) / 1e8).rounded() / 10 }
}

extension Engine {
    /// Mirrors one conntrack fact. Only TCP flows with a protected end matter (the agent's
    /// ctnetlink reader drops the rest); the table is bounded (`Policy.conntrackTableCapacity`)
    /// and evicts its oldest entries when full, which costs at worst a hold and a retransmitted SYN.
    /// Returns whether the fact concerns a flow a protected host opened (replication health).
    @discardableResult
    public func learn(_ fact: ConntrackFact, at now: Nanoseconds) -> Bool {
        let openerProtected = policy.protected.contains(fact.source)
        guard openerProtected || policy.protected.contains(fact.destination) else { return false }
        let s = unsafeBitCast(fact.source.bytes, to: SIMD2<UInt64>.self)
        let d = unsafeBitCast(fact.destination.bytes, to: SIMD2<UInt64>.self)
        let sLow = s[0] != d[0] ? s[0] < d[0] : s[1] != d[1] ? s[1] < d[1] : fact.sourcePort <= fact.destinationPort
        let key = sLow
            ? FlowKey(a0: fact.source.bytes, a1: fact.destination.bytes, p0: fact.sourcePort, p1: fact.destinationPort)
            : FlowKey(a0: fact.destination.bytes, a1: fact.source.bytes, p0: fact.destinationPort, p1: fact.sourcePort)
        let h = key.hash(seed)
        let ms = Engine.msTime(now)
        var i = conntrack.find(key, hash: h)
        switch fact.kind {
        case .gone:
            if i >= 0 { conntrack.remove(at: i) }
        case .present:
            if i < 0 { i = conntrack.claim(hash: h, now: ms, idleLimit: tuning.pointee.establishedHorizonMs, seed: seed) }
            conntrack.slots[i] = ConntrackEntry(a0: key.a0, a1: key.a1, lastSeen: ms, p0: key.p0, p1: key.p1,
                                                state: fact.state, openerIs0: sLow)
        }
        return openerProtected
    }

    /// Tells the engine whether conntrack replication is healthy (`ReplicationWatch`): while it is
    /// not, a SYN-ACK without state gets `ct_miss` instead of being held and dropped.
    public func setReplicationHealthy(_ healthy: Bool) {
        hot.pointee.replicationStalled = !healthy
    }

    public var replicationHealthy: Bool { !hot.pointee.replicationStalled }

    /// SYNs from protected hosts this engine has tracked (whether this router sees them at all).
    public var outboundSyns: UInt64 { hot.pointee.synsSeen }

    /// Conntrack entries mirrored now, and those evicted for room.
    public var conntrackEntries: Int { conntrack.count }
    public var conntrackEvictions: UInt64 { conntrack.evictions }

    /// Settles a SYN-ACK that `decide` left `.stateAwaited`: accepted as `solicited-conntrack` (or
    /// `solicited-synack`) once its state is here; while `final` is false and there is none,
    /// still `.stateAwaited` (not counted); at the end of the wait (`final`), judged as a SYN-ACK
    /// without state. Every packet `decide` left provisional must be settled with `final` once.
    public func settle(_ p: ParsedPacket, at now: Nanoseconds, final: Bool) -> Decision {
        let ms = Engine.msTime(now)
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let d = synackWithoutLocalState(p, key, senderIs0: senderIs0, ms, now: now, final: final)
        if d.reason != .stateAwaited { count(d) }
        return d
    }

    /// An inbound SYN-ACK the agent's own flow table cannot answer, under `state = conntrack`:
    /// conntrack's view, then the wait, then what a miss gets.
    func synackWithoutLocalState(_ p: ParsedPacket, _ key: FlowKey, senderIs0: Bool, _ ms: UInt32, now: Nanoseconds,
                                 final: Bool) -> Decision {
        let i = conntrack.find(key, hash: key.hash(seed))
        // The SYN-ACK's receiver must be the flow's opener: a SYN-ACK in the opener's own direction
        // answers nothing.
        if i >= 0, conntrack.slots[i].state.answersSynack, conntrack.slots[i].openerIs0 != senderIs0 {
            return Decision(.accept, .solicitedConntrack)
        }
        if tuning.pointee.mode == .ingressOnly { return scoreSynack(p, key, ms, now: now) }
        if !hot.pointee.replicationStalled {
            if !final { return Decision(.drop, .stateAwaited) }
            let d = drop(.unsolicitedSynack, p)
            if d.verdict == .drop { noteDrop(p.destination, ms, now: now) }
            return d
        }
        switch policy.conntrackMiss {
        case .score: return scoreSynack(p, key, ms, now: now)
        case .accept: return Decision(.accept, .conntrackMissAccepted)
        case .drop:
            let d = drop(.unsolicitedSynack, p)
            if d.verdict == .drop { noteDrop(p.destination, ms, now: now) }
            return d
        }
    }
}

extension FlowKey {
    init(a0: SIMD16<UInt8>, a1: SIMD16<UInt8>, p0: UInt16, p1: UInt16) {
        self.a0 = a0; self.a1 = a1; self.p0 = p0; self.p1 = p1
    }
}
