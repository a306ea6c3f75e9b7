import PacketParser
import VerdictEngine

/// Reads ctnetlink messages (a dump's replies, NEW / UPDATE / DESTROY events) into the engine's
/// `ConntrackFact`s: the original tuple and the TCP state, nothing else. Pure: bytes in, facts out,
/// every length checked before it is read, so tests feed it built messages.
///
/// Layout (include/uapi/linux/netfilter/nfnetlink_conntrack.h): nlmsghdr (16 bytes), nfgenmsg
/// (4), then attributes: CTA_TUPLE_ORIG { CTA_TUPLE_IP { CTA_IP_V4_SRC/DST | CTA_IP_V6_SRC/DST },
/// CTA_TUPLE_PROTO { CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT } }, CTA_PROTOINFO {
/// CTA_PROTOINFO_TCP { CTA_PROTOINFO_TCP_STATE } }. Ports are big-endian; attribute headers
/// host-endian (netlink). nfgenmsg's family (AF_INET or AF_INET6) is the entry's: a tuple whose
/// addresses are of another family, or of two, is no conntrack entry, and is malformed.
public enum ConntrackMessage {
    /// What one netlink message was.
    public enum Parsed: Equatable {
        case fact(ConntrackFact)
        /// A conntrack message that is not about a TCP flow, or lacks the tuple: nothing to learn.
        case ignored
        /// NLMSG_DONE: a dump's end.
        case done
        /// NLMSG_ERROR with its (negative) errno; 0 is an ACK.
        case error(Int32)
        /// Bytes that are not a well-formed message (counted by the reader).
        case malformed
    }

    static let nlmsgHeader = 16
    static let nfgenHeader = 4
    static let typeNew: UInt16 = 1 << 8 | 0      // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
    static let typeDelete: UInt16 = 1 << 8 | 2   // IPCTNL_MSG_CT_DELETE
    static let nlmsgError: UInt16 = 2
    static let nlmsgDone: UInt16 = 3
    static let afInet: UInt8 = 2
    static let afInet6: UInt8 = 10

    /// Walks every message in `buffer` (one recv's worth) and hands each on.
    public static func forEach(in buffer: UnsafeRawBufferPointer, _ body: (Parsed) -> Void) {
        var off = 0
        while buffer.count - off >= nlmsgHeader {
            let len = Int(load32(buffer, off))
            guard len >= nlmsgHeader, len <= buffer.count - off else { body(.malformed); return }
            body(parse(UnsafeRawBufferPointer(rebasing: buffer[off..<(off + len)])))
            off += (len + 3) & ~3
        }
    }

    /// One whole netlink message.
    public static func parse(_ m: UnsafeRawBufferPointer) -> Parsed {
        guard m.count >= nlmsgHeader else { return .malformed }
        let type = load16(m, 4)
        if type == nlmsgDone { return .done }
        if type == nlmsgError {
            guard m.count >= nlmsgHeader + 4 else { return .malformed }
            return .error(Int32(bitPattern: load32(m, nlmsgHeader)))
        }
        let kind: ConntrackFact.Kind
        switch type {
        case typeNew: kind = .present
        case typeDelete: kind = .gone
        default: return .ignored
        }
        guard m.count >= nlmsgHeader + nfgenHeader else { return .malformed }
        let family = m[nlmsgHeader]   // nfgenmsg.nfgen_family
        var tuple: Tuple?
        var state = ConntrackTCPState.none
        var ok = true
        attributes(m, from: nlmsgHeader + nfgenHeader, to: m.count) { type, start, end in
            switch type {
            case 1:   // CTA_TUPLE_ORIG
                tuple = readTuple(m, start, end)
                if tuple == nil { ok = false }
            case 4:   // CTA_PROTOINFO
                attributes(m, from: start, to: end) { t, s, e in
                    guard t == 1 else { return }   // CTA_PROTOINFO_TCP
                    attributes(m, from: s, to: e) { t2, s2, e2 in
                        if t2 == 1, e2 > s2 { state = ConntrackTCPState(rawValue: m[s2]) ?? .none }   // CTA_PROTOINFO_TCP_STATE
                    }
                }
            default: break
            }
        } malformed: { ok = false }
        guard ok else { return .malformed }
        guard let t = tuple else { return .ignored }
        guard family == (t.v6 ? afInet6 : afInet) else { return .malformed }
        // An IPv6 entry with an IPv4-mapped address (::ffff:a.b.c.d) would alias the IPv4 flow of
        // those addresses, which the engine keys the same way; no packet the kernel takes has one
        // as its source (ip6_rcv_core drops it), so only an injected entry could.
        if t.v6 && (IPAddress.lanesAreV4(t.src.lanes) || IPAddress.lanesAreV4(t.dst.lanes)) { return .ignored }
        guard t.proto == 6 else { return .ignored }
        return .fact(ConntrackFact(kind, source: t.src, sourcePort: t.sport, destination: t.dst, destinationPort: t.dport,
                                   state: state))
    }

    /// An original tuple; `v6`: its addresses came as CTA_IP_V6_* (both, or it is no tuple).
    private typealias Tuple = (src: IPAddress, dst: IPAddress, sport: UInt16, dport: UInt16, proto: UInt8, v6: Bool)

    private static func readTuple(_ m: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Tuple? {
        var src: (address: IPAddress, v6: Bool)?, dst: (address: IPAddress, v6: Bool)?
        var sport: UInt16?, dport: UInt16?, proto: UInt8?
        var bad = false
        attributes(m, from: start, to: end) { type, s, e in
            switch type {
            case 1:   // CTA_TUPLE_IP
                attributes(m, from: s, to: e) { t, s2, e2 in
                    switch (t, e2 - s2) {
                    case (1, 4): src = (IPAddress(v4: m[s2], m[s2 + 1], m[s2 + 2], m[s2 + 3]), false)   // CTA_IP_V4_SRC
                    case (2, 4): dst = (IPAddress(v4: m[s2], m[s2 + 1], m[s2 + 2], m[s2 + 3]), false)   // CTA_IP_V4_DST
                    case (3, 16): src = (v6(m, s2), true)                                                // CTA_IP_V6_SRC
                    case (4, 16): dst = (v6(m, s2), true)                                                // CTA_IP_V6_DST
                    default: break
                    }
                } malformed: { bad = true }
            case 2:   // CTA_TUPLE_PROTO
                attributes(m, from: s, to: e) { t, s2, e2 in
                    switch (t, e2 - s2) {
                    case (1, 1): proto = m[s2]                                       // CTA_PROTO_NUM
                    case (2, 2): sport = UInt16(m[s2]) << 8 | UInt16(m[s2 + 1])      // CTA_PROTO_SRC_PORT
                    case (3, 2): dport = UInt16(m[s2]) << 8 | UInt16(m[s2 + 1])      // CTA_PROTO_DST_PORT
                    default: break
                    }
                } malformed: { bad = true }
            default: break
            }
        } malformed: { bad = true }
        guard !bad, let src, let dst, let proto, src.v6 == dst.v6 else { return nil }
        return (src.address, dst.address, sport ?? 0, dport ?? 0, proto, src.v6)
    }

    private static func v6(_ m: UnsafeRawBufferPointer, _ at: Int) -> IPAddress {
        var b = SIMD16<UInt8>()
        for i in 0..<16 { b[i] = m[at + i] }
        return IPAddress(bytes: b)
    }

    /// Each attribute in [from, to): its type (flags masked off) and payload range.
    private static func attributes(_ m: UnsafeRawBufferPointer, from: Int, to: Int,
                                   _ body: (UInt16, Int, Int) -> Void, malformed: () -> Void = {}) {
        var off = from
        while to - off >= 4 {
            let len = Int(load16(m, off))
            guard len >= 4, len <= to - off else { malformed(); return }
            body(load16(m, off + 2) & 0x3fff, off + 4, off + len)
            off += (len + 3) & ~3
        }
    }

    @inline(__always)
    private static func load16(_ m: UnsafeRawBufferPointer, _ at: Int) -> UInt16 {
        m.loadUnaligned(fromByteOffset: at, as: UInt16.self)
    }

    @inline(__always)
    private static func load32(_ m: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        m.loadUnaligned(fromByteOffset: at, as: UInt32.self)
    }
}
