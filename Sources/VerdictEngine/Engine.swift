import PacketParser

/// The verdict engine: one per NFQUEUE queue (the kernel's balancing hash is symmetric per host
/// pair, so engines share nothing). Pure Swift, no I/O, no clock: time comes with each packet,
/// so a capture always scores the same.
///
/// State is bounded and allocated once, at init: tracked flows (`FlowEntry`, 64 bytes each),
/// token buckets, per-victim rates and the SYN-ACKs seen in ingress-only mode, each a
/// `GroupTable` hashed with this engine's secret seed. Only packets the protected side sends
/// create flow state, so a spoofed flood can neither fill nor probe the flow table.
public final class Engine {
    public private(set) var policy: Policy

    /// Values the hot path reads (horizons in ms, per-engine rates: each of the `queueCount`
    /// engines gets its share of the agent's rates, matchers) and state it updates, each in an
    /// `OwnedBuffer` held in a `let` (see there: no dynamic exclusivity checks, freed once).
    /// `~Copyable` because it owns the matchers and the per-network budgets, which a policy
    /// change replaces in place.
    struct Tuning: ~Copyable {
        var synHorizonMs: UInt32 = 0
        var synackHorizonMs: UInt32 = 0
        var rstRate: Float = 0, rstBurst: Float = 0
        var rstPrefixRate: Float = 0, rstPrefixBurst: Float = 0
        var rstNetworkRate: Float = 0, rstNetworkBurst: Float = 0
        var backscatterRate: Float = 0, backscatterBurst: Float = 0
        var attackThreshold: Float = 0
        /// Drops per window that keep an attack on: half the threshold, rounded up, at least 1.
        var attackHalf: UInt32 = 1
        var victimFloor: Float = 0, prefixFloor: Float = 0
        var rstAttackFactor: Float = 0, rstAttackFloor: Float = 0, rstNetworkAttackFloor: Float = 0
        var rstHoldRate: Float = 0
        var rstWarmupMs: UInt32 = 0
        var establishedHorizonMs: UInt32 = 0
        /// The kernel's learn sets' timeout (`Policy.learnInterval`), in ms.
        var learnIntervalMs: UInt32 = 0
        var track: Track = .handshake
        var mode: Mode = .symmetric
        /// `state = conntrack` (`decide` only: `decideObserved` judges captures, which carry none).
        var conntrack = false
        var ephemeralPorts: ClosedRange<UInt16> = 32768...60999
        var scoreThreshold = 60
        /// The last offset from the network header at which `run`'s copy still holds the fixed
        /// 20-byte TCP header (`policy.copyRange` - 20).
        var transportLimit = UInt16(Policy.defaultCopyRange - 20)
        var protected: PrefixMatcher
        var allowlist: PrefixMatcher
        /// One RST budget per protected prefix (`protected.index(of:)`), at least one; replaced
        /// with the matcher on a policy change.
        var networkBuckets: OwnedBuffer<RSTBudget>
        /// Guarded flows (`Policy.trackFullPorts`, `trackFullHosts`): one bit per port, and the
        /// hosts; `guarding` false skips both.
        var guarding = false
        var guardPorts: OwnedBuffer<UInt64>
        var guardHosts: PrefixMatcher
    }

    struct HotState {
        var decisions: UInt64 = 0
        var lastTickSecond: UInt32 = 0
        /// Packet time of the first tick (the engine's start, for the RST warm-up).
        var startMs: UInt32 = 0
        var started = false
        /// The protected side's SYN option profile, learnt from its SYNs (ingress-only scoring).
        var synsSeen: UInt64 = 0, synsWithSACK: UInt64 = 0, synsWithTS: UInt64 = 0, synsWithWS: UInt64 = 0
        /// `state = conntrack`: replication is stalled (`setReplicationHealthy`), so a SYN-ACK
        /// without state gets `ct_miss` rather than a hold and a drop.
        var replicationStalled = false
    }

    let tuning: OwnedBuffer<Tuning>
    let hot: OwnedBuffer<HotState>

    private var synHorizonMs: UInt32 { tuning.pointee.synHorizonMs }
    var synackHorizonMs: UInt32 { tuning.pointee.synackHorizonMs }
    private var rstRate: Float { tuning.pointee.rstRate }
    private var rstBurst: Float { tuning.pointee.rstBurst }
    private var rstPrefixRate: Float { tuning.pointee.rstPrefixRate }
    private var rstPrefixBurst: Float { tuning.pointee.rstPrefixBurst }
    private var backscatterRate: Float { tuning.pointee.backscatterRate }
    private var backscatterBurst: Float { tuning.pointee.backscatterBurst }
    var attackThreshold: Float { tuning.pointee.attackThreshold }
    var victimFloor: Float { tuning.pointee.victimFloor }
    var prefixFloor: Float { tuning.pointee.prefixFloor }

    let seed: KeyedHash
    private let flows: GroupTable<FlowEntry>
    /// `state = conntrack`: the kernel's conntrack entries of protected flows, as the agent
    /// reports them (`learn`). Full size only when the engine starts with that state.
    let conntrack: GroupTable<ConntrackEntry>
    let seenSynacks: GroupTable<SeenSynack>
    let rstAddressBuckets: GroupTable<RSTBudget>
    let rstPrefixBuckets: GroupTable<RSTBudget>
    private let backscatterBuckets: GroupTable<Bucket>
    let victimRates: GroupTable<RateStats>
    let prefixRates: GroupTable<RateStats>

    /// Decisions per `Reason.ordinal`.
    private let counts: OwnedBuffer<UInt64>


    var active: [ActiveAttack] = []
    /// RST attacks on /24s, /64s (`network` -1) and protected networks (`network` its index).
    var rstActive: [ActiveAttack] = []
    var events: [AttackEvent] = []
    var eventsLost: UInt64 = 0
    var rstAttacksStarted: UInt64 = 0

    /// RSTs accepted per tracked flow before the flow's RSTs go through the buckets: enough for a
    /// RST and its retransmissions, not enough to turn a known 4-tuple into a flood channel.
    static let rstPerFlow: UInt8 = 3
    /// How far past the SYN a RST on a flow in SYN-SENT may acknowledge and still be taken as
    /// the end of a handshake the engine did not see complete: 16 MiB the client sent, while a
    /// blind guess lands there once in 256.
    static let unseenHandshakeAck: UInt32 = 1 << 24
    /// An attack ends after this long without a window at half the threshold.
    static let attackQuietMs: UInt32 = 10_000
    static let maxActiveAttacks = 256
    static let maxPendingEvents = 4096
    /// Ingress-only: a same-ISN SYN-ACK at least this long after the last one is a reflector
    /// retransmission (Linux: 1, 2, 4, … s apart), not a duplicate on the wire.
    static let retransmitSpacingMs: UInt32 = 800

    /// `seed` keys every hash table; pass a random one in production (`Engine(policy:)` does),
    /// a fixed one in tests.
    public init(policy: Policy, seed: UInt64) {
        self.policy = policy
        self.seed = KeyedHash(seed)
        tuning = OwnedBuffer(Tuning(protected: PrefixMatcher(policy.protected), allowlist: PrefixMatcher(policy.allowlist),
                                    networkBuckets: Engine.networkBuckets(policy),
                                    guardPorts: OwnedBuffer(repeating: 0, count: 1024),
                                    guardHosts: PrefixMatcher(policy.trackFullHosts)))
        hot = OwnedBuffer(HotState())
        flows = GroupTable(capacity: max(16, policy.synTableCapacity))
        conntrack = GroupTable(capacity: policy.stateSource == .conntrack ? max(16, policy.conntrackTableCapacity) : 16)
        seenSynacks = GroupTable(capacity: 1 << 16)
        rstAddressBuckets = GroupTable(capacity: 1 << 16)
        rstPrefixBuckets = GroupTable(capacity: 1 << 14)
        backscatterBuckets = GroupTable(capacity: 1 << 14)
        victimRates = GroupTable(capacity: 1 << 16)
        prefixRates = GroupTable(capacity: 1 << 14)
        counts = OwnedBuffer(repeating: 0, count: Reason.ordinalCount)
        active.reserveCapacity(Engine.maxActiveAttacks)
        rstActive.reserveCapacity(Engine.maxActiveAttacks)
        events.reserveCapacity(Engine.maxPendingEvents)
        derive()
    }

    /// An engine with a random hash seed (production).
    public convenience init(policy: Policy) {
        self.init(policy: policy, seed: KeyedHash.randomSeed())
    }

    /// Backs all of the engine's tables with memory now, so no packet waits for a first-touch page
    /// fault (an inline agent calls it once, before its first packet; `score` and tests do not:
    /// they would only move the cost).
    public func prefault() {
        flows.prefault(); seenSynacks.prefault(); rstAddressBuckets.prefault(); rstPrefixBuckets.prefault()
        backscatterBuckets.prefault(); victimRates.prefault(); prefixRates.prefault()
        if policy.stateSource == .conntrack { conntrack.prefault() }
    }

    /// Replaces the policy (SIGHUP) and keeps all state: tracked flows keep answering SYN-ACKs
    /// across a reload. The flow table's capacity is fixed at init and not changed here.
    /// Each replaced matcher and budget array is freed as its replacement is assigned.
    public func updatePolicy(_ newPolicy: Policy) {
        policy = newPolicy
        let t = tuning.base
        t.pointee.protected = PrefixMatcher(newPolicy.protected)
        t.pointee.allowlist = PrefixMatcher(newPolicy.allowlist)
        // Prefixes may have changed: the per-network budgets start over, full.
        t.pointee.networkBuckets = Engine.networkBuckets(newPolicy)
        t.pointee.guardHosts = PrefixMatcher(newPolicy.trackFullHosts)
        derive()
    }

    private func derive() {
        let q = Float(max(1, policy.queueCount))
        let t = tuning.base
        t.pointee.synHorizonMs = Engine.ms(policy.synHorizon)
        t.pointee.synackHorizonMs = Engine.ms(policy.synackHorizon)
        t.pointee.rstRate = Float(policy.rstRate) / q
        t.pointee.rstBurst = max(1, Float(policy.rstBurst) / q)
        t.pointee.rstPrefixRate = Float(policy.rstPrefixRate) / q
        t.pointee.rstPrefixBurst = max(1, Float(policy.rstPrefixBurst) / q)
        t.pointee.rstNetworkRate = Float(policy.rstNetworkRate) / q
        t.pointee.rstNetworkBurst = max(1, Float(policy.rstNetworkBurst) / q)
        t.pointee.backscatterRate = Float(policy.backscatterRate) / q
        t.pointee.backscatterBurst = max(1, Float(policy.backscatterBurst) / q)
        t.pointee.attackThreshold = max(1, Float(policy.attackRate) / q)
        t.pointee.attackHalf = UInt32(max(1, (t.pointee.attackThreshold / 2).rounded(.up)))
        t.pointee.victimFloor = 20 / q
        t.pointee.rstAttackFactor = Float(policy.rstAttackFactor)
        t.pointee.rstAttackFloor = max(1, Float(policy.rstAttackFloor) / q)
        t.pointee.rstNetworkAttackFloor = max(1, Float(policy.rstNetworkAttackFloor) / q)
        t.pointee.rstHoldRate = Float(policy.rstHoldRate) / q
        t.pointee.rstWarmupMs = Engine.ms(policy.rstWarmup)
        t.pointee.establishedHorizonMs = max(Engine.ms(policy.establishedHorizon), Engine.ms(policy.synHorizon))
        t.pointee.learnIntervalMs = Engine.ms(policy.learnInterval)
        t.pointee.prefixFloor = 50 / q
        t.pointee.track = policy.track
        t.pointee.mode = policy.mode
        t.pointee.conntrack = policy.stateSource == .conntrack
        t.pointee.ephemeralPorts = policy.ephemeralPorts
        t.pointee.scoreThreshold = policy.scoreThreshold
        t.pointee.guardPorts.base.update(repeating: 0, count: t.pointee.guardPorts.count)
        for r in policy.trackFullPorts { for port in r { t.pointee.guardPorts[Int(port) >> 6] |= 1 << UInt64(port & 63) } }
        t.pointee.guarding = !policy.trackFullPorts.isEmpty || !policy.trackFullHosts.isEmpty
        t.pointee.transportLimit = UInt16(clamping: max(0, policy.copyRange - 20))
    }

    /// Full network budgets, one per protected prefix (at least one, so the pointer is valid).
    private static func networkBuckets(_ policy: Policy) -> OwnedBuffer<RSTBudget> {
        let n = max(1, policy.protected.prefixes.count)
        let burst = max(1, Float(policy.rstNetworkBurst) / Float(max(1, policy.queueCount)))
        let b = OwnedBuffer(repeating: RSTBudget(key: .zero, tokens: burst, now: 0), count: n)
        let budgets = b.base
        for (i, c) in networkPrefixes(policy).enumerated() {
            budgets[i].key = c.address.bytes
            budgets[i].wide = c.length < (c.isIPv4 ? 120 : 64)
        }
        return b
    }

    /// The protected prefixes in the order `PrefixMatcher.index(of:)` numbers them (IPv4 first).
    static func networkPrefixes(_ policy: Policy) -> [CIDR] {
        policy.protected.prefixes.filter(\.isIPv4) + policy.protected.prefixes.filter { !$0.isIPv4 }
    }

    private static func ms(_ seconds: Double) -> UInt32 {
        UInt32(clamping: Int64(max(0, min(seconds, 2_000_000)) * 1000))
    }

    // MARK: - Entry points

    /// What the rules queue to the engine, so `score` can feed exactly those packets.
    ///
    /// A packet is queued when it carries a TCP header, one endpoint is in `policy.protected`,
    /// and with `track = handshake` (the default) one of:
    /// - RST set (either direction): `tcp flags & rst == rst`;
    /// - SYN and ACK set (either direction): `tcp flags & (syn|ack) == syn|ack`;
    /// - SYN set, ACK clear, RST clear, and the **source** is protected: `ip saddr @protected
    ///   tcp flags & (syn|ack|rst) == syn` (inbound SYNs to protected servers are not queued).
    /// With `track = full` every TCP packet with a protected source or destination is queued, and
    /// with `handshake` so is every packet of a guarded flow (`Policy.guards`).
    /// The side the packet arrived from plays no part (the rules queue by address; the engine
    /// judges the side). The allowlist plays no part either (allowlisted packets are queued and
    /// accepted with a reason, so they are counted).
    public static func wouldQueue(_ packet: ParsedPacket, policy: Policy, side: Side = .unknown) -> Bool {
        guard packet.hasTCP else { return false }
        if packet.ipv4MappedInIPv6 {
            let srcP = policy.protected.containsAsIPv6(packet.source)
            return queues(packet.flags, sourceProtected: srcP,
                          destinationProtected: policy.protected.containsAsIPv6(packet.destination), track: policy.track)
                ?? (srcP || policy.guards(packet))
        }
        return queues(packet.flags, sourceProtected: policy.protected.contains(packet.source),
                      destinationProtected: policy.protected.contains(packet.destination), track: policy.track)
            ?? policy.guards(packet)
    }

    /// The rules' queue predicate (nft/reflectguard.nft), the one place it is written: both
    /// `wouldQueue`s and `decideObserved` ask it. It answers from the flags and which ends are
    /// protected, and nil where the flow decides: queued then only if it is guarded or, for a
    /// packet the protected side sends, if the learn rule takes it (`queuedByFlow`; the static
    /// `wouldQueue`, which has no flows, asks only the first). Plain values, no closures: as a
    /// call taking closures it was not inlined into `route` (callgrind: +10% a decision).
    @inline(__always)
    static func queues(_ f: TCPFlags, sourceProtected srcP: Bool, destinationProtected dstP: Bool, track: Track) -> Bool? {
        guard srcP || dstP else { return false }
        if track == .full || f.isRST || f.isSYNACK || (f.isSYN && srcP) { return true }
        return nil
    }

    /// `wouldQueue` with the one rule that depends on state, asked before the packet is decided:
    /// with `track = handshake` the kernel also queues a packet a protected host sends on a flow
    /// that is not in its learn sets (nft/reflectguard.nft, `learn_interval`). This engine
    /// follows those sets: an element is added or refreshed exactly when the engine sets a
    /// flow's `lastSeen` from a packet the protected side sends (its SYNs, SYN-ACKs, and the
    /// packets this rule queues), and the sets start empty with the engine (the agent empties
    /// them at start). The two differ only when one of them is full.
    public func wouldQueue(_ packet: ParsedPacket, at now: Nanoseconds, side: Side = .unknown) -> Bool {
        guard packet.hasTCP else { return false }
        if packet.ipv4MappedInIPv6 { return queuedMappedInIPv6(packet) }
        let srcP = tuning.pointee.protected.contains(packet.source)
        return Engine.queues(packet.flags, sourceProtected: srcP, destinationProtected: tuning.pointee.protected.contains(packet.destination),
                             track: tuning.pointee.track) ?? queuedByFlow(packet, sourceProtected: srcP, now: now)
    }

    /// Where `Engine.queues` leaves it to the flow: a guarded flow's packet, or one the protected
    /// side sends that the learn rule takes.
    @inline(__always)
    private func queuedByFlow(_ p: ParsedPacket, sourceProtected srcP: Bool, now: Nanoseconds) -> Bool {
        guarded(p) || (srcP && learns(p, Engine.msTime(now)))
    }

    /// Whether the kernel's learn rule queues this packet of a protected host (see `wouldQueue(_:at:)`).
    @inline(never)
    private func learns(_ p: ParsedPacket, _ ms: UInt32) -> Bool {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let i = flows.find(key, hash: key.hash(seed))
        return i < 0 || age(ms, since: flows.slots[i].lastSeen) >= tuning.pointee.learnIntervalMs
    }

    /// Decides any packet a capture holds, as `run` would have: packets the rules never queue
    /// are accepted with the reason why (`malformed` or `not-tcp` when there is no readable TCP
    /// header, `not-protected`, `not-queued`), the rest go to `decide`.
    public func decideObserved(_ packet: ParsedPacket, at now: Nanoseconds, side: Side = .unknown) -> Decision {
        route(packet, now: now, side: side, observed: true)
    }

    /// Decides one packet the rules queued. `side` is where it arrived from, when known.
    public func decide(_ packet: ParsedPacket, at now: Nanoseconds, side: Side = .unknown) -> Decision {
        route(packet, now: now, side: side, observed: false)
    }

    /// Both entry points in one function that also counts, so the public calls become a jump
    /// and a packet pays one call frame before its handler (callgrind: the two frames of entry
    /// point and `judge` were ~25% of a decision's instructions).
    @inline(never)
    private func route(_ p: ParsedPacket, now: Nanoseconds, side: Side, observed: Bool) -> Decision {
        var d: Decision
        // Without the fixed 20 bytes of TCP there is nothing to judge (`unjudged`). A packet whose
        // fixed header is readable but whose lengths are inconsistent (data offset past the
        // segment, options cut) is judged like any other, inline and in `score` alike: its ports,
        // flags, seq and ack are all there, and accepting it would let a spoofer pass any check by
        // padding the data offset. `packets.malformed` still counts it.
        if !p.hasTCP {
            d = unjudged(p, now: now, side: side, observed: observed)
        } else if p.ipv4MappedInIPv6 {
            d = mappedInIPv6(p, now: now, side: side, observed: observed)
        } else {
            let srcP = tuning.pointee.protected.contains(p.source)
            let dstP = tuning.pointee.protected.contains(p.destination)
            if observed && !(srcP || dstP) {
                d = Decision(.accept, .notProtected)
            } else if observed && !(Engine.queues(p.flags, sourceProtected: srcP, destinationProtected: dstP,
                                                  track: tuning.pointee.track) ?? queuedByFlow(p, sourceProtected: srcP, now: now)) {
                d = Decision(.accept, .notQueued)
            } else if observed && p.transportOffset &- p.networkOffset > tuning.pointee.transportLimit {
                // A captured header past the bytes `run` copies: judged on what `run` had of it,
                // nothing. (TCP options that straddle the copy's end are the one thing `run` saw
                // less of; only option-based evidence reads them.)
                d = unreadable(p, now: now, side: side)
            } else {
                // What `judge` was, written in place: `@inline(__always)` left it a call here.
                let ms = Engine.msTime(now)
                if ms / 1000 != hot.pointee.lastTickSecond { tick(ms) }
                let f = p.flags
                if !(srcP || dstP) {
                    d = Decision(.accept, .notProtected)
                } else if srcP && side == .outside {
                    // BCP 38: a protected source arriving from outside is forged, and never creates state.
                    d = drop(.spoofedSource, p)
                } else if f.isRST {
                    d = srcP ? outboundRST(p, ms) : inboundRST(p, ms, now: now)
                } else if f.isSYNACK {
                    d = srcP ? outboundSynack(p, ms) : inboundSynack(p, ms, now: now, conntrack: !observed && tuning.pointee.conntrack)
                } else if f.isSYN && srcP {
                    d = outboundSyn(p, ms)
                } else {
                    d = otherPacket(p, ms, outbound: srcP)
                }
            }
        }
        // A SYN-ACK left waiting for its conntrack state is counted when `settle` decides it.
        if d.reason != .stateAwaited { count(d) }
        return d
    }

    @inline(__always)
    func count(_ d: Decision) {
        counts[d.reason.ordinal] &+= 1
        hot.pointee.decisions &+= 1
    }

    /// A packet without a TCP header the engine may read: accepted and counted as `malformed`
    /// (or `not-tcp`), except when only the reading stopped short of the header (the copy range,
    /// or the parser's bounded extension-header walk): inline, the kernel found the header and
    /// its flags made the rules queue the packet, and accepting it would let a spoofer pass every
    /// check with a long enough header chain (`unreadable`). In a capture such a cut hides the
    /// flags, so whether the kernel queued the packet cannot be told: `malformed`.
    ///
    /// A data offset below 5 is the same inline: nft reads the flags at byte 13 whatever the data
    /// offset says, so a SYN-ACK or RST with data offset 0 is queued, and the Linux host drops it
    /// (tcp_v4_rcv refuses doff < 5) only after it reached the host, where it passed unjudged and
    /// never counted towards arming. `score` keeps `malformed` for it, as for a snap-length cut:
    /// the parser reads no TCP field of a header whose length it cannot trust (the packet counts
    /// follow tshark, which does the same), so the flags that made the kernel queue it are unknown.
    @inline(never)
    private func unjudged(_ p: ParsedPacket, now: Nanoseconds, side: Side, observed: Bool) -> Decision {
        if p.malformed == nil { return Decision(.accept, .notTCP) }
        if !observed && Engine.headerOutOfReach(p) { return unreadable(p, now: now, side: side) }
        return Decision(.accept, .malformed)
    }

    /// The walk stopped before the fixed TCP header for want of bytes or of steps (more
    /// extension headers than the parser follows), after the addresses were read; or the header
    /// is there but its data offset is below 5 (`hasTCP` is then false, see `unjudged`).
    @inline(__always)
    static func headerOutOfReach(_ p: ParsedPacket) -> Bool {
        guard p.network != .none, !p.hasTCP, let m = p.malformed else { return false }
        return m == .truncatedExtensionHeader || m == .extensionHeaderChainTooLong || m == .truncatedTCP
            || m == .badDataOffset
    }

    /// A queued packet whose TCP header the agent cannot read. The rules queue TCP by its flags
    /// (handshake: SYN-ACKs and RSTs to protected hosts; track = full: any TCP of a protected
    /// flow), and a spoofer chooses the header chain: one to a protected host is dropped and
    /// counted towards arming the victim's prefix like an unsolicited SYN-ACK (armed, the kernel
    /// judges such packets itself: nft walks the whole chain). One a protected host sends is
    /// accepted: it cannot be tracked, but it is the protected side's own packet.
    @inline(never)
    private func unreadable(_ p: ParsedPacket, now: Nanoseconds, side: Side) -> Decision {
        if p.ipv4MappedInIPv6 { return mappedInIPv6(p, now: now, side: side, observed: false) }
        let srcP = tuning.pointee.protected.contains(p.source)
        guard tuning.pointee.protected.contains(p.destination) || srcP else { return Decision(.accept, .notProtected) }
        let ms = Engine.msTime(now)
        if ms / 1000 != hot.pointee.lastTickSecond { tick(ms) }
        if srcP && side == .outside { return drop(.spoofedSource, p) }
        if srcP { return Decision(.accept, .malformed) }
        let d = drop(.unreadableHeader, p)
        if d.verdict == .drop { noteDrop(p.destination, ms, now: now) }
        return d
    }

    /// An IPv6 packet with an IPv4-mapped source or destination (`::ffff:a.b.c.d`). Stored,
    /// such an address equals the IPv4 host's, and flows, RST budgets and arming are keyed by
    /// address: so the packet is judged here, on the IPv6 prefixes alone (as nft matches an IPv6
    /// header against the `6` sets only), and touches no state. No real flow carries such an
    /// address (RFC 4291 §2.5.5.2; Linux's TCP refuses a SYN from one and never sends to one
    /// over IPv6, though its IP layer routes them and the rules may queue them), so nothing is
    /// kept for one, and one to a protected host is dropped, not counted towards arming, whose
    /// budgets would be the IPv4 host's. One a protected host sends is accepted and tracked
    /// nowhere, so it cannot make a later IPv4 packet look solicited.
    /// `decide` judges one whose TCP header it cannot read the same way (`unreadable`): the
    /// verdict needs only the direction.
    @inline(never)
    private func mappedInIPv6(_ p: ParsedPacket, now: Nanoseconds, side: Side, observed: Bool) -> Decision {
        let srcP = tuning.pointee.protected.containsAsIPv6(p.source)
        guard srcP || tuning.pointee.protected.containsAsIPv6(p.destination) else { return Decision(.accept, .notProtected) }
        if observed && !queuedMappedInIPv6(p) { return Decision(.accept, .notQueued) }
        let ms = Engine.msTime(now)
        if ms / 1000 != hot.pointee.lastTickSecond { tick(ms) }
        if srcP && side != .outside { return Decision(.accept, .ipv4MappedSent) }
        if !tuning.pointee.allowlist.isEmpty,
           tuning.pointee.allowlist.containsAsIPv6(p.source) || tuning.pointee.allowlist.containsAsIPv6(p.destination) {
            return Decision(.accept, .allowlisted)
        }
        return Decision(.drop, srcP ? .spoofedSource : .ipv4Mapped)
    }

    /// `wouldQueue(_:at:)` for `mappedInIPv6`'s packets. Where the flow decides, the learn rule
    /// is taken to queue every packet a protected host sends: no flow of theirs is ever kept. The
    /// kernel's learn set queues only one a `learn_interval`, so `score` may call a later one
    /// `ipv4-mapped-sent` where `run` never saw it; both accept it.
    private func queuedMappedInIPv6(_ p: ParsedPacket) -> Bool {
        let srcP = tuning.pointee.protected.containsAsIPv6(p.source)
        return Engine.queues(p.flags, sourceProtected: srcP, destinationProtected: tuning.pointee.protected.containsAsIPv6(p.destination),
                             track: tuning.pointee.track) ?? (srcP || guarded(p))
    }

    public var stats: EngineStats {
        var s = EngineStats()
        for r in Reason.allCases { s.reasons[r] = counts[r.ordinal] }
        s.decisions = hot.pointee.decisions
        s.flowEntries = flows.count
        s.flowCapacity = policy.synTableCapacity
        s.flowSlots = flows.slotCount
        s.flowEvictions = flows.evictions
        s.flowTableBytes = flows.allocatedBytes
        s.bucketEntries = rstAddressBuckets.count + rstPrefixBuckets.count + backscatterBuckets.count
        s.bucketEvictions = rstAddressBuckets.evictions + rstPrefixBuckets.evictions + backscatterBuckets.evictions
        s.activeAttacks = active.count
        s.activeRSTAttacks = rstActive.count
        s.rstAttacksStarted = rstAttacksStarted
        s.attackEventsLost = eventsLost
        s.conntrackEntries = conntrack.count
        s.conntrackEvictions = conntrack.evictions
        return s
    }

    /// Attack starts and ends since the last call, oldest first. Bounded: when nobody drains,
    /// the newest are lost and counted (`stats.attackEventsLost`).
    public func drainAttackEvents() -> [AttackEvent] {
        let out = events
        events.removeAll(keepingCapacity: true)
        return out
    }

    /// Lets packet time move without a packet (an idle queue), so attacks can end.
    public func advance(to now: Nanoseconds) {
        tick(Engine.msTime(now))
    }

    @inline(__always)
    static func msTime(_ now: Nanoseconds) -> UInt32 { UInt32(truncatingIfNeeded: now / 1_000_000) }

    // MARK: - Decisions

    /// Allowlisted endpoints are never dropped: the drop becomes an accept with `allowlisted`.
    @inline(__always)
    func drop(_ reason: Reason, _ p: ParsedPacket, score: UInt8 = 0) -> Decision {
        if !tuning.pointee.allowlist.isEmpty, tuning.pointee.allowlist.contains(p.source) || tuning.pointee.allowlist.contains(p.destination) {
            return Decision(.accept, .allowlisted, score: score)
        }
        return Decision(.drop, reason, score: score)
    }

    @inline(__always)
    private func live(_ e: FlowEntry, _ ms: UInt32) -> Bool {
        // Past the handshake, a flow lives as long as established flows do: nothing refreshes it
        // with track = handshake, and its closing RST must still find it.
        let established = e.state & (FlowEntry.synackSeen | FlowEntry.midstream) != 0
        return age(ms, since: e.lastSeen) <= (established ? tuning.pointee.establishedHorizonMs : synHorizonMs)
    }

    @inline(__always)
    private func acksSYN(_ e: FlowEntry, _ ack: UInt32) -> Bool {
        ack == e.isn &+ 1 || (e.synPayload != 0 && ack == e.isn &+ 1 &+ UInt32(e.synPayload))
    }

    /// Window-scale shift of a SYN's options, 0xf when it has none.
    @inline(__always)
    private static func shift(_ s: TCPOptionSignature) -> UInt8 { s.windowScale.map { min($0, 14) } ?? 0xf }

    /// A SYN from a protected host: track it (new, retransmitted, or a new SYN reusing the 4-tuple).
    private func outboundSyn(_ p: ParsedPacket, _ ms: UInt32) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let h = key.hash(seed)
        var i = flows.find(key, hash: h)
        if i >= 0 {
            let e = flows.slots[i]
            if e.isInitiator(senderIs0) && e.isn == p.sequence && !e.has(FlowEntry.midstream)
                && !e.has(FlowEntry.serverRole) {
                // Retransmission: the SYN-ACK horizon runs from the latest copy.
                flows.slots[i].lastSeen = ms
                return Decision(.accept, .synTracked)
            }
        } else {
            i = flows.claim(hash: h, now: ms, idleLimit: synHorizonMs, seed: seed)
        }
        var e = FlowEntry(key: key, now: ms)
        e.state = senderIs0 ? FlowEntry.initiatorIs0 : 0
        e.isn = p.sequence
        e.synPayload = p.payloadLength
        e.synOptions = p.optionSignature.rawValue & 0x00ff_ffff
        e.setNxt(senderIs0, p.sequence &+ 1 &+ UInt32(p.payloadLength))
        e.setWindow(senderIs0, p.window, unscaled: true)
        e.setScale(senderIs0, Engine.shift(p.optionSignature))
        flows.slots[i] = e
        hot.pointee.synsSeen &+= 1
        if p.optionSignature.sackPermitted { hot.pointee.synsWithSACK &+= 1 }
        if p.optionSignature.timestamps { hot.pointee.synsWithTS &+= 1 }
        if p.optionSignature.windowScale != nil { hot.pointee.synsWithWS &+= 1 }
        return Decision(.accept, .synTracked)
    }

    /// A SYN-ACK from a protected server: track the server side of the handshake, so RSTs on the
    /// flow are known.
    private func outboundSynack(_ p: ParsedPacket, _ ms: UInt32) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let h = key.hash(seed)
        var i = flows.find(key, hash: h)
        if i >= 0 {
            let e = flows.slots[i]
            if !e.isInitiator(senderIs0) && acksSYN(e, p.acknowledgment) && !e.has(FlowEntry.midstream) {
                flows.slots[i].lastSeen = ms
                flows.slots[i].state |= FlowEntry.synackSeen
                flows.slots[i].advanceNxt(senderIs0, p.sequence &+ 1)
                flows.slots[i].setWindow(senderIs0, p.window, unscaled: true)
                return Decision(.accept, .synackSent)
            }
        } else {
            i = flows.claim(hash: h, now: ms, idleLimit: synHorizonMs, seed: seed)
        }
        var e = FlowEntry(key: key, now: ms)
        e.state = (senderIs0 ? 0 : FlowEntry.initiatorIs0) | FlowEntry.serverRole | FlowEntry.synackSeen
        e.isn = p.acknowledgment &- 1
        e.setNxt(!senderIs0, p.acknowledgment)
        e.setNxt(senderIs0, p.sequence &+ 1)
        e.setWindow(senderIs0, p.window, unscaled: true)
        // The client's window (its SYN was not queued) is not known until it sends: the largest.
        e.setWindow(!senderIs0, 0xffff, unscaled: false)
        // The client's shift is not known (its SYN was not queued); the server's is, if scaling is on.
        let s = Engine.shift(p.optionSignature)
        if s == 0xf { e.scales = 0 } else { e.setScale(senderIs0, s) }
        flows.slots[i] = e
        return Decision(.accept, .synackSent)
    }

    /// A SYN-ACK to a protected host: it must answer a tracked SYN (reversed 4-tuple,
    /// ack == ISN + 1 or ISN + 1 + TFO data, within the SYN-ACK horizon of the latest SYN).
    private func inboundSynack(_ p: ParsedPacket, _ ms: UInt32, now: Nanoseconds, conntrack: Bool) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let i = flows.find(key, hash: key.hash(seed))
        if i >= 0 {
            let e = flows.slots[i]
            if live(e, ms), !e.isInitiator(senderIs0), !e.has(FlowEntry.serverRole),
               !e.has(FlowEntry.midstream), acksSYN(e, p.acknowledgment),
               e.has(FlowEntry.synackSeen) || age(ms, since: e.lastSeen) <= synackHorizonMs {
                if !e.has(FlowEntry.synackSeen) {
                    var u = e
                    u.state |= FlowEntry.synackSeen
                    u.setNxt(senderIs0, p.sequence &+ 1)
                    u.setWindow(senderIs0, p.window, unscaled: true)
                    // RFC 7323 §2.2: scaling is on only when both SYNs carry the option.
                    let s = Engine.shift(p.optionSignature)
                    if s == 0xf || u.scale(!senderIs0) == 0xf { u.scales = 0 } else { u.setScale(senderIs0, s) }
                    flows.slots[i] = u
                }
                // `lastSeen` stays the time of the SYN: the kernel's learn set is refreshed by
                // the protected side's packets only, and `wouldQueue(_:at:)` follows it.
                return Decision(.accept, .solicitedSynack)
            }
        }
        if conntrack {
            // Where this router saw the SYN itself, its ISN is the authority (conntrack carries
            // none): a live handshake the protected host opened that this SYN-ACK does not
            // acknowledge stays unsolicited, whatever conntrack says about the 4-tuple.
            let sawSyn = i >= 0 && live(flows.slots[i], ms) && !flows.slots[i].isInitiator(senderIs0)
                && !flows.slots[i].has(FlowEntry.serverRole) && !flows.slots[i].has(FlowEntry.midstream)
            if !sawSyn { return synackWithoutLocalState(p, key, senderIs0: senderIs0, ms, now: now, final: false) }
        }
        if tuning.pointee.mode == .ingressOnly { return scoreSynack(p, key, ms, now: now) }
        let d = drop(.unsolicitedSynack, p)
        if d.verdict == .drop { noteDrop(p.destination, ms, now: now) }
        return d
    }

    /// A RST from a protected host.
    private func outboundRST(_ p: ParsedPacket, _ ms: UInt32) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let i = flows.find(key, hash: key.hash(seed))
        if i >= 0 && live(flows.slots[i], ms) { return Decision(.accept, .rstTracked) }
        // A stack answers a segment with ACK set (a SYN-ACK) with a bare RST whose seq is that
        // segment's ack, and a segment without ACK (a SYN) with RST|ACK (RFC 9293 §3.10.7.1):
        // a bare RST on an unknown flow is backscatter of an unsolicited SYN-ACK.
        if p.flags.contains(.ack) { return Decision(.accept, .rstSent) }
        let ok = take(backscatterBuckets, p.source.bytes, ms, rate: backscatterRate, burst: backscatterBurst)
        return ok ? Decision(.accept, .backscatter) : drop(.backscatterRateLimit, p)
    }

    /// A RST to a protected host.
    private func inboundRST(_ p: ParsedPacket, _ ms: UInt32, now: Nanoseconds) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let i = flows.find(key, hash: key.hash(seed))
        if i >= 0 && live(flows.slots[i], ms) {
            let e = flows.slots[i]
            if !e.has(FlowEntry.synackSeen) && !e.has(FlowEntry.midstream) && !e.isInitiator(senderIs0) {
                // SYN-SENT (RFC 9293 §3.10.7.3): acceptable only when it acknowledges the SYN.
                if p.flags.contains(.ack) && acksSYN(e, p.acknowledgment) { return Decision(.accept, .rstRefused) }
                if p.flags.contains(.ack) && p.acknowledgment &- (e.isn &+ 1) &- 1 < Engine.unseenHandshakeAck {
                    // It acknowledges data the client sent after its SYN: the handshake completed
                    // without the engine seeing the SYN-ACK (the kernel accepted it for an armed
                    // victim from its pending set, a full queue failed open, or it came another
                    // way), and this ends an established flow: judged as one, among its first
                    // RSTs. A host really in SYN-SENT ignores such a RST, so passing it costs
                    // nothing; and the flow's state stays, so a blind guess that lands here (one
                    // in 256) changes nothing but this RST's verdict.
                    guard e.rstCount < Engine.rstPerFlow else { return untrackedRST(p, ms, now: now) }
                    flows.slots[i].state &+= 1 << FlowEntry.rstShift
                    return Decision(.accept, .rstTracked)
                }
                // Counted like any other RST drop: a flood aimed at pending handshakes is an attack too.
                let d = drop(.rstOutOfWindow, p)
                if d.verdict == .drop { noteRSTDrop(p, ms, now: now) }
                return d
            }
            let guarded = guarded(p)
            if guarded && e.has(FlowEntry.midstream) && e.nxt(senderIs0) == nil {
                // A guarded flow seeded at start (`seedEstablished`) that has sent nothing since:
                // its window is unknown, so no RST on it can be told from a blind guess. Dropping
                // it ends no session that should end: the protected end's next segment (queued,
                // the flow is guarded) teaches the window, and a peer that really reset answers
                // that segment with an exact RST.
                let d = drop(.rstUnverified, p)
                if d.verdict == .drop { noteRSTDrop(p, ms, now: now) }
                return d
            }
            if tuning.pointee.track == .full || guarded, let rcvNxt = e.nxt(senderIs0) {
                // RFC 5961 §3.2, judged for the receiver: its RCV.NXT is what the sender sends next.
                if p.sequence == rcvNxt { return Decision(.accept, .rstExact) }
                if p.sequence &- rcvNxt < e.windowBytes(!senderIs0) {
                    // A guarded flow's endpoint would only send a challenge ACK for it; a real
                    // peer answers that ACK with an exact RST, and keeps answering the flow's
                    // next segments so, so dropping it here ends no session that should end.
                    if !guarded { return Decision(.accept, .rstInWindow) }
                    let d = drop(.rstInexact, p)
                    if d.verdict == .drop { noteRSTDrop(p, ms, now: now) }
                    return d
                }
                let d = drop(.rstOutOfWindow, p)
                if d.verdict == .drop { noteRSTDrop(p, ms, now: now) }
                return d
            }
            // Flows learnt midstream count too: the protected side sent on them (`learns`).
            if e.rstCount < Engine.rstPerFlow {
                flows.slots[i].state &+= 1 << FlowEntry.rstShift
                return Decision(.accept, .rstTracked)
            }
        }
        return untrackedRST(p, ms, now: now)
    }

    /// Everything else: every packet of a protected flow with track = full or a guarded one, and
    /// with track = handshake a packet the protected side sends once per `learn_interval`
    /// (`learns`). Moves the flow's sequence window, and learns a flow the engine does not know.
    private func otherPacket(_ p: ParsedPacket, _ ms: UInt32, outbound: Bool) -> Decision {
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let h = key.hash(seed)
        var i = flows.find(key, hash: h)
        if i >= 0 && live(flows.slots[i], ms) {
            var e = flows.slots[i]
            if e.has(FlowEntry.synackSeen) || e.has(FlowEntry.midstream) {
                // A segment outside the receiver's window (a blind spoof, or an old
                // retransmission) moves nothing, but the flow is still in use. A seeded flow
                // knows no window yet: only the protected side's packets set it, so a spoofed
                // segment cannot plant one that the flow's real RSTs then miss.
                let known = e.state & (FlowEntry.nxt0Valid | FlowEntry.nxt1Valid) != 0
                if (known || outbound) && e.acceptable(p, senderIs0) { advance(&e, p, senderIs0) }
                e.lastSeen = ms
                flows.slots[i] = e
            } else if outbound {
                // The kernel's learn set takes the flow in again with this packet. A client that
                // acknowledges is past its handshake, though the engine missed the SYN-ACK.
                e.lastSeen = ms
                if e.isInitiator(senderIs0) && p.flags.contains(.ack) {
                    e.state |= FlowEntry.synackSeen
                    advance(&e, p, senderIs0)
                }
                flows.slots[i] = e
            }
            return Decision(.accept, .flowTracked)
        }
        guard outbound && !p.flags.isSYN else { return Decision(.accept, .flowUntracked) }
        // A flow already running when the engine started (or past its horizon, or evicted):
        // follow it from the protected side's packets. Only those create state, so a spoofed
        // flood cannot fill the table this way (with `inside_ifaces` set, not even a spoofed
        // protected source).
        if i < 0 { i = flows.claim(hash: h, now: ms, idleLimit: synHorizonMs, seed: seed) }
        var e = FlowEntry(key: key, now: ms)
        e.state = FlowEntry.midstream | (senderIs0 ? FlowEntry.initiatorIs0 : 0)
        // The peer's window is not known until it sends: assume the largest, so the protected
        // side's own segments are not held back by the in-window check meanwhile.
        e.setWindow(!senderIs0, 0xffff, unscaled: false)
        advance(&e, p, senderIs0)
        flows.slots[i] = e
        return Decision(.accept, .flowTracked)
    }

    /// Seeds a flow known from outside the packet path to be established now, e.g. read from
    /// the kernel's conntrack table at start, so its RSTs are tracked (`rst-tracked`, the first
    /// three) before it sends anything: the one case the learn rule cannot cover is a flow
    /// silent from before the agent started until its RST. `protectedEnd` must be in a
    /// protected network (else nothing is seeded and false is returned); `now` is packet time
    /// (the agent's monotonic clock). Nothing of the sequence space is known, so a guarded
    /// flow's window check starts with its next packets. A flow the engine tracks already is
    /// left as it is. On a guarded flow a RST is dropped (`rst-unverified`) until the protected
    /// side's next packet teaches the window. Not thread-safe, like every call into an engine:
    /// inline, call it before the engine's worker takes packets.
    @discardableResult
    public func seedEstablished(protectedEnd: IPAddress, port: UInt16, peer: IPAddress, peerPort: UInt16,
                                at now: Nanoseconds) -> Bool {
        guard tuning.pointee.protected.contains(protectedEnd) else { return false }
        var p = ParsedPacket()
        p.network = protectedEnd.isIPv4Mapped ? .ipv4 : .ipv6
        p.hasTCP = true
        p.ipProtocol = 6
        p.source = protectedEnd; p.destination = peer
        p.sourcePort = port; p.destinationPort = peerPort
        p.flags = .ack
        let ms = Engine.msTime(now)
        var senderIs0 = false
        let key = FlowKey(p, senderIs0: &senderIs0)
        let h = key.hash(seed)
        var i = flows.find(key, hash: h)
        if i >= 0 && live(flows.slots[i], ms) { return true }
        if i < 0 { i = flows.claim(hash: h, now: ms, idleLimit: synHorizonMs, seed: seed) }
        var e = FlowEntry(key: key, now: ms)
        e.state = FlowEntry.midstream | (senderIs0 ? FlowEntry.initiatorIs0 : 0)
        e.setWindow(!senderIs0, 0xffff, unscaled: false)
        flows.slots[i] = e
        return true
    }

    /// Whether `p` belongs to a guarded flow (`Policy.guards`, from the tables in `tuning`).
    @inline(__always)
    func guarded(_ p: ParsedPacket) -> Bool {
        let t = tuning.base
        guard t.pointee.guarding else { return false }
        let bits = t.pointee.guardPorts.base
        @inline(__always) func has(_ port: UInt16) -> Bool { bits[Int(port) >> 6] & (1 << UInt64(port & 63)) != 0 }
        return has(p.sourcePort) || has(p.destinationPort)
            || t.pointee.guardHosts.contains(p.source) || t.pointee.guardHosts.contains(p.destination)
    }

    @inline(__always)
    private func advance(_ e: inout FlowEntry, _ p: ParsedPacket, _ senderIs0: Bool) {
        let f = p.flags
        let len = UInt32(p.payloadLength) &+ (f.isFIN ? 1 : 0) &+ (f.contains(.syn) ? 1 : 0)
        e.advanceNxt(senderIs0, p.sequence &+ len)
        if f.contains(.ack) { e.advanceNxt(!senderIs0, p.acknowledgment) }
        e.setWindow(senderIs0, p.window, unscaled: f.contains(.syn))
    }
}

struct ActiveAttack {
    var key: SIMD16<UInt8>
    var prefix: CIDR
    var startedAt: Nanoseconds
    var lastAboveMs: UInt32
    /// RST attacks on a protected network: its index in `tuning.networkBuckets`; -1 otherwise.
    var network: Int = -1
}
