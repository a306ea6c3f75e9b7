#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// One verdict message as the kernel reads it (nfnetlink_queue's nfqnl_recv_verdict and
/// nfqnl_recv_verdict_batch): decoded at the C structs' offsets.
public struct VerdictMessage: Equatable, Sendable, CustomStringConvertible {
    public var batch: Bool
    public var queue: UInt16
    public var verdict: UInt32
    public var id: UInt32

    public init(batch: Bool, queue: UInt16, verdict: UInt32, id: UInt32) {
        self.batch = batch; self.queue = queue; self.verdict = verdict; self.id = id
    }

    public var accepts: Bool { verdict == UInt32(NF_ACCEPT) }
    public var description: String { "\(batch ? "batch≤" : "single ")\(id) \(accepts ? "accept" : "drop")" }

    public enum Malformed: Error, Equatable { case message(String) }

    /// Every message of a send buffer, in order; throws at the first byte that breaks the layout.
    public static func decode(_ bytes: [UInt8]) throws -> [VerdictMessage] {
        typealias L = NetlinkLayout
        var out: [VerdictMessage] = []
        var at = 0
        while at < bytes.count {
            guard bytes.count - at >= L.header else { throw Malformed.message("\(bytes.count - at) trailing bytes") }
            let length = Int(bytes.host32(at: at + L.lengthAt))
            guard length >= L.header + L.nfgen + L.attributeHeader + L.verdictHeader, at + length <= bytes.count else {
                throw Malformed.message("length \(length) at \(at) of \(bytes.count)")
            }
            let type = bytes.host16(at: at + L.typeAt)
            guard type == L.verdictType || type == L.batchType else { throw Malformed.message("type \(type)") }
            guard bytes.host16(at: at + L.flagsAt) & UInt16(NLM_F_REQUEST) != 0 else { throw Malformed.message("no NLM_F_REQUEST") }
            let nfgen = at + L.header
            guard bytes[nfgen + L.familyAt] == UInt8(AF_UNSPEC), bytes[nfgen + L.versionAt] == UInt8(NFNETLINK_V0) else {
                throw Malformed.message("nfgenmsg family/version")
            }
            let queue = bytes.be16(at: nfgen + L.resIDAt)
            // The attributes: exactly one NFQA_VERDICT_HDR of the struct's size.
            var attr = nfgen + L.nfgen
            var found: (UInt32, UInt32)? = nil
            while attr + L.attributeHeader <= at + length {
                let alen = Int(bytes.host16(at: attr + L.attributeLengthAt))
                let atype = bytes.host16(at: attr + L.attributeTypeAt) & 0x3fff
                guard alen >= L.attributeHeader, attr + alen <= at + length else { throw Malformed.message("attribute length \(alen)") }
                if atype == UInt16(NFQA_VERDICT_HDR.rawValue) {
                    guard alen == L.attributeHeader + L.verdictHeader, found == nil else { throw Malformed.message("verdict header of \(alen)") }
                    let p = attr + L.attributeHeader
                    found = (bytes.be32(at: p + L.verdictAt), bytes.be32(at: p + L.verdictIDAt))
                }
                attr += L.align(alen)
            }
            guard let (verdict, id) = found else { throw Malformed.message("no NFQA_VERDICT_HDR") }
            out.append(VerdictMessage(batch: type == L.batchType, queue: queue, verdict: verdict, id: id))
            at += L.align(length)
        }
        return out
    }
}

/// An NFQNL_MSG_PACKET message as the kernel builds it (nfqnl_build_packet_message): the
/// headers, then NFQA_PACKET_HDR, the interfaces, the timestamp, NFQA_CAP_LEN when the copy was
/// cut, and NFQA_PAYLOAD.
public struct PacketMessage: Sendable {
    public var id: UInt32
    public var queue: UInt16 = 0
    public var payload: [UInt8]
    public var length: Int? = nil
    public var seconds: UInt64? = nil
    public var microseconds: UInt64 = 0
    public var inInterface: UInt32? = nil
    public var outInterface: UInt32? = nil

    public init(id: UInt32, payload: [UInt8] = Array(repeating: 0x45, count: 40)) {
        self.id = id
        self.payload = payload
    }

    public var bytes: [UInt8] {
        typealias L = NetlinkLayout
        var m = [UInt8](repeating: 0, count: L.header + L.nfgen)
        m.putHost16(L.packetType, at: L.typeAt)
        m[L.header + L.familyAt] = UInt8(AF_INET)
        m[L.header + L.versionAt] = UInt8(NFNETLINK_V0)
        m.putBE16(queue, at: L.header + L.resIDAt)
        func attribute(_ type: nfqnl_attr_type, _ value: [UInt8]) {
            var a = [UInt8](repeating: 0, count: L.attributeHeader)
            a.putHost16(UInt16(L.attributeHeader + value.count), at: L.attributeLengthAt)
            a.putHost16(UInt16(type.rawValue), at: L.attributeTypeAt)
            a += value
            a += [UInt8](repeating: 0, count: L.align(a.count) - a.count)
            m += a
        }
        var hdr = [UInt8](repeating: 0, count: L.packetHeader)
        hdr.putBE32(id, at: L.packetIDAt)
        hdr.putBE16(0x0800, at: L.hwProtocolAt)
        hdr[L.hookAt] = UInt8(NF_INET_FORWARD.rawValue)
        attribute(NFQA_PACKET_HDR, hdr)
        func u32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putBE32(v, at: 0); return b }
        if let i = inInterface { attribute(NFQA_IFINDEX_INDEV, u32(i)) }
        if let o = outInterface { attribute(NFQA_IFINDEX_OUTDEV, u32(o)) }
        if let s = seconds {
            var t = [UInt8](repeating: 0, count: L.timestamp)
            t.putBE64(s, at: L.secondsAt)
            t.putBE64(microseconds, at: L.microsecondsAt)
            attribute(NFQA_TIMESTAMP, t)
        }
        if let length { attribute(NFQA_CAP_LEN, u32(UInt32(length))) }
        attribute(NFQA_PAYLOAD, payload)
        m.putHost32(UInt32(m.count), at: L.lengthAt)
        return m
    }
}
