import PacketParser

/// One tracked TCP flow: 64 bytes, one cache line (checked by a test).
///
/// Created only by packets the protected side sends: its SYNs (client role), its SYN-ACKs
/// (server role), and with `track = full` its other packets (midstream). Fields are ordered
/// widest first so there is no padding.
struct FlowEntry: TableSlot {
    var a0: SIMD16<UInt8>
    var a1: SIMD16<UInt8>
    /// The initiator's ISN (the SYN's sequence number).
    var isn: UInt32
    /// Packet time in ms of the last packet that refreshed the entry. While no SYN-ACK has been
    /// seen only SYNs refresh it, so it is then the time of the last (re)transmitted SYN.
    var lastSeen: UInt32
    /// Bits 0-23: the option signature of the initiator's SYN (TCPOptionSignature.rawValue
    /// without the option order, which nothing here reads). Bits 24-31: `windowFlags`, kept here
    /// because the 64 bytes are full.
    var synOptions: UInt32
    /// Next sequence number expected from endpoint 0 / 1 (RCV.NXT of the other endpoint).
    var nxt0: UInt32
    var nxt1: UInt32
    var p0: UInt16
    var p1: UInt16
    /// Last raw window endpoint 0 / 1 advertised.
    var win0: UInt16
    var win1: UInt16
    /// Data carried on the SYN (TCP Fast Open): the SYN-ACK may acknowledge it.
    var synPayload: UInt16
    var state: UInt8
    /// Window-scale shift of endpoint 0 (low nibble) and 1 (high nibble); 0xf = unknown.
    var scales: UInt8

    // state bits
    static let initiatorIs0: UInt8 = 0x01
    /// Tracked from the protected server's SYN-ACK (the initiator is remote).
    static let serverRole: UInt8 = 0x02
    static let synackSeen: UInt8 = 0x04
    static let nxt0Valid: UInt8 = 0x08
    static let nxt1Valid: UInt8 = 0x10
    /// Tracked from the middle of a flow (track = full): no handshake was seen.
    static let midstream: UInt8 = 0x20
    /// RSTs accepted as `rst-tracked` so far (two bits).
    static let rstShift: UInt8 = 6

    @inline(__always)
    func hasKey(_ key: FlowKey) -> Bool {
        p0 == key.p0 && p1 == key.p1 && sameBytes(a0, key.a0) && sameBytes(a1, key.a1)
    }

    func hash(_ seed: KeyedHash) -> UInt64 { seed.hash(a0, a1, UInt64(p0) << 16 | UInt64(p1)) }

    init(key: FlowKey, now: UInt32) {
        a0 = key.a0; a1 = key.a1; p0 = key.p0; p1 = key.p1
        isn = 0; lastSeen = now; synOptions = 0; nxt0 = 0; nxt1 = 0
        win0 = 0; win1 = 0; synPayload = 0; state = 0; scales = 0xff
    }

    @inline(__always) func has(_ bit: UInt8) -> Bool { state & bit != 0 }
    var rstCount: UInt8 { state >> FlowEntry.rstShift }

    /// Whether endpoint `d` (0 or 1) started the flow.
    @inline(__always) func isInitiator(_ senderIs0: Bool) -> Bool { has(FlowEntry.initiatorIs0) == senderIs0 }

    @inline(__always) func nxt(_ is0: Bool) -> UInt32? {
        if is0 { return has(FlowEntry.nxt0Valid) ? nxt0 : nil }
        return has(FlowEntry.nxt1Valid) ? nxt1 : nil
    }

    @inline(__always) mutating func setNxt(_ is0: Bool, _ v: UInt32) {
        if is0 { nxt0 = v; state |= FlowEntry.nxt0Valid } else { nxt1 = v; state |= FlowEntry.nxt1Valid }
    }

    /// Moves endpoint's next sequence forward (never back: retransmissions and reordering).
    @inline(__always) mutating func advanceNxt(_ is0: Bool, _ v: UInt32) {
        if let cur = nxt(is0), Int32(bitPattern: v &- cur) <= 0 { return }
        setNxt(is0, v)
    }

    /// Whether a segment from endpoint `senderIs0` lies inside its receiver's window, i.e. its
    /// end (seq + length) is in [RCV.NXT, RCV.NXT + window] (conntrack's tcp_in_window, much
    /// reduced): only such a segment may move RCV.NXT and the window, so a blind spoofer cannot
    /// push them and have the flow's legitimate RSTs dropped. One unsigned compare, wrap-safe.
    @inline(__always) func acceptable(_ p: ParsedPacket, _ senderIs0: Bool) -> Bool {
        guard let rcvNxt = nxt(senderIs0) else { return true }
        let f = p.flags
        let end = p.sequence &+ UInt32(p.payloadLength) &+ (f.isFIN ? 1 : 0) &+ (f.contains(.syn) ? 1 : 0)
        return end &- rcvNxt <= windowBytes(!senderIs0)
    }

    /// `synOptions` bits: the window of endpoint 0 / 1 came from a segment with SYN set, which
    /// is never scaled (RFC 7323 §2.2).
    static let win0Unscaled: UInt32 = 1 << 24
    static let win1Unscaled: UInt32 = 1 << 25

    /// Records the window an endpoint advertised; `unscaled` for a SYN's or SYN-ACK's window.
    @inline(__always) mutating func setWindow(_ is0: Bool, _ w: UInt16, unscaled: Bool) {
        let bit = is0 ? FlowEntry.win0Unscaled : FlowEntry.win1Unscaled
        if is0 { win0 = w } else { win1 = w }
        synOptions = unscaled ? synOptions | bit : synOptions & ~bit
    }

    @inline(__always) func window(_ is0: Bool) -> UInt16 { is0 ? win0 : win1 }

    /// The receive window endpoint `is0` last advertised, in bytes: the raw window shifted by
    /// its scale, unless it came from the handshake; an unknown scale counts as the largest (14),
    /// which errs on the side of accepting.
    @inline(__always) func windowBytes(_ is0: Bool) -> UInt32 {
        if synOptions & (is0 ? FlowEntry.win0Unscaled : FlowEntry.win1Unscaled) != 0 { return UInt32(window(is0)) }
        let sh = scale(is0)
        return UInt32(window(is0)) << UInt32(sh == 0xf ? 14 : sh)
    }

    @inline(__always) func scale(_ is0: Bool) -> UInt8 { is0 ? scales & 0xf : scales >> 4 }

    @inline(__always) mutating func setScale(_ is0: Bool, _ s: UInt8) {
        scales = is0 ? (scales & 0xf0) | (s & 0xf) : (scales & 0x0f) | (s << 4)
    }
}

/// An inbound SYN-ACK seen without a tracked SYN (ingress-only scoring): was the same ISN seen
/// before, at a reflector's retransmission spacing?
struct SeenSynack: TableSlot {
    var a0: SIMD16<UInt8>
    var a1: SIMD16<UInt8>
    var isn: UInt32
    var lastSeen: UInt32
    var p0: UInt16
    var p1: UInt16
    var repeats: UInt8

    func hash(_ seed: KeyedHash) -> UInt64 { seed.hash(a0, a1, UInt64(p0) << 16 | UInt64(p1)) }

    @inline(__always)
    func hasKey(_ key: FlowKey) -> Bool {
        p0 == key.p0 && p1 == key.p1 && sameBytes(a0, key.a0) && sameBytes(a1, key.a1)
    }
}

/// A token bucket for one address or prefix (RST and backscatter rate limits).
struct Bucket: AddressKeyed {
    var key: SIMD16<UInt8>
    var tokens: Float
    var lastSeen: UInt32

}

/// Rates seen by one victim address or prefix, in one-second windows of packet time.
struct RateStats: AddressKeyed {
    var key: SIMD16<UInt8>
    /// Bitmap of hashed reflector addresses in the current window (distinct-source estimate).
    var reflectors: SIMD2<UInt64>
    var windowStart: UInt32
    var lastSeen: UInt32
    /// SYN-ACKs (all inbound, for the ingress baseline) and their drops in the current window.
    /// RST drops count towards the RST budgets' own attacks (`RSTBudget`), not here.
    var synacks: UInt32
    var synackDrops: UInt32
    /// Last closed window's rates per second, and the moving baseline of `synacks`.
    var synackRate: Float
    var dropRate: Float
    var baseline: Float
    /// Attack bookkeeping (prefix table only): the last time the drops reached half the
    /// threshold, and whether an attack is on (kept here so a drop needs no list search).
    var lastAboveMs: UInt32
    var lastReflectors: UInt16
    var attackActive: Bool


    init(key: SIMD16<UInt8>, now: UInt32) {
        self.key = key; reflectors = .zero; windowStart = now; lastSeen = now
        synacks = 0; synackDrops = 0
        synackRate = 0; dropRate = 0; baseline = 0; lastReflectors = 0
        lastAboveMs = now; attackActive = false
    }
}
