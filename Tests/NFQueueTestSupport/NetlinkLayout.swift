#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// Where the kernel's netfilter-queue messages keep their fields, taken from the C structs of
/// <linux/netlink.h>, <linux/netfilter/nfnetlink.h> and <linux/netfilter/nfnetlink_queue.h> as the
/// C compiler lays them out (Swift imports C structs with Clang's layout, so `MemoryLayout`'s size
/// and `offset(of:)` are C's sizeof and offsetof). The tests build and read messages with these
/// and nothing else: a message libmnl or our code lays out differently fails them.
public enum NetlinkLayout {
    public static let header = MemoryLayout<nlmsghdr>.size
    public static let lengthAt = MemoryLayout<nlmsghdr>.offset(of: \.nlmsg_len)!
    public static let typeAt = MemoryLayout<nlmsghdr>.offset(of: \.nlmsg_type)!
    public static let flagsAt = MemoryLayout<nlmsghdr>.offset(of: \.nlmsg_flags)!
    public static let sequenceAt = MemoryLayout<nlmsghdr>.offset(of: \.nlmsg_seq)!

    public static let nfgen = MemoryLayout<nfgenmsg>.size
    public static let familyAt = MemoryLayout<nfgenmsg>.offset(of: \.nfgen_family)!
    public static let versionAt = MemoryLayout<nfgenmsg>.offset(of: \.version)!
    public static let resIDAt = MemoryLayout<nfgenmsg>.offset(of: \.res_id)!

    public static let attributeHeader = MemoryLayout<nlattr>.size
    public static let attributeLengthAt = MemoryLayout<nlattr>.offset(of: \.nla_len)!
    public static let attributeTypeAt = MemoryLayout<nlattr>.offset(of: \.nla_type)!

    public static let verdictHeader = MemoryLayout<nfqnl_msg_verdict_hdr>.size
    public static let verdictAt = MemoryLayout<nfqnl_msg_verdict_hdr>.offset(of: \.verdict)!
    public static let verdictIDAt = MemoryLayout<nfqnl_msg_verdict_hdr>.offset(of: \.id)!

    public static let packetHeader = MemoryLayout<nfqnl_msg_packet_hdr>.size
    public static let packetIDAt = MemoryLayout<nfqnl_msg_packet_hdr>.offset(of: \.packet_id)!
    public static let hwProtocolAt = MemoryLayout<nfqnl_msg_packet_hdr>.offset(of: \.hw_protocol)!
    public static let hookAt = MemoryLayout<nfqnl_msg_packet_hdr>.offset(of: \.hook)!

    public static let timestamp = MemoryLayout<nfqnl_msg_packet_timestamp>.size
    public static let secondsAt = MemoryLayout<nfqnl_msg_packet_timestamp>.offset(of: \.sec)!
    public static let microsecondsAt = MemoryLayout<nfqnl_msg_packet_timestamp>.offset(of: \.usec)!

    /// NLMSG_ALIGN / NLA_ALIGN: 4 bytes.
    public static func align(_ n: Int) -> Int { (n + 3) & ~3 }

    public static let verdictType = UInt16(NFNL_SUBSYS_QUEUE) << 8 | UInt16(NFQNL_MSG_VERDICT.rawValue)
    public static let batchType = UInt16(NFNL_SUBSYS_QUEUE) << 8 | UInt16(NFQNL_MSG_VERDICT_BATCH.rawValue)
    public static let packetType = UInt16(NFNL_SUBSYS_QUEUE) << 8 | UInt16(NFQNL_MSG_PACKET.rawValue)
}

/// Little helpers over a byte array: host order for netlink's own headers, network order for
/// the netfilter payloads (the kernel's __be16/__be32/__be64).
public extension Array where Element == UInt8 {
    func host16(at i: Int) -> UInt16 { UInt16(self[i]) | UInt16(self[i + 1]) << 8 }
    func host32(at i: Int) -> UInt32 { UInt32(host16(at: i)) | UInt32(host16(at: i + 2)) << 16 }
    func be16(at i: Int) -> UInt16 { UInt16(self[i]) << 8 | UInt16(self[i + 1]) }
    func be32(at i: Int) -> UInt32 { UInt32(be16(at: i)) << 16 | UInt32(be16(at: i + 2)) }

    mutating func putHost16(_ v: UInt16, at i: Int) { self[i] = UInt8(v & 0xff); self[i + 1] = UInt8(v >> 8) }
    mutating func putHost32(_ v: UInt32, at i: Int) { putHost16(UInt16(v & 0xffff), at: i); putHost16(UInt16(v >> 16), at: i + 2) }
    mutating func putBE16(_ v: UInt16, at i: Int) { self[i] = UInt8(v >> 8); self[i + 1] = UInt8(v & 0xff) }
    mutating func putBE32(_ v: UInt32, at i: Int) { putBE16(UInt16(v >> 16), at: i); putBE16(UInt16(v & 0xffff), at: i + 2) }
    mutating func putBE64(_ v: UInt64, at i: Int) { putBE32(UInt32(v >> 32), at: i); putBE32(UInt32(v & 0xffff_ffff), at: i + 4) }
}
