#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// Reads queued packets many at a time: one recvmmsg takes up to `receiveBatch` netlink
/// messages (the kernel sends each queued packet in its own message), so a flood costs one
/// receive system call per batch rather than per packet. Buffers are allocated once.
public final class PacketReceiver {
    public let socket: any QueueTransport
    private let slots: Int
    /// Per slot: big enough for the largest packet message (copy range + attributes), with room.
    private let slotSize: Int
    private let storage: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutablePointer<rg_mmsghdr>
    private let attributes: UnsafeMutablePointer<UnsafeMutablePointer<nlattr>?>
    private let attributeCount: Int
    private var received = 0

    /// Netlink errors the kernel sent back (a verdict naming an id it no longer had, …).
    public private(set) var netlinkErrors = 0
    /// ENOBUFS seen on receive (only when NETLINK_NO_ENOBUFS is unavailable): messages were lost.
    public private(set) var enobufs = 0
    /// Messages cut because they did not fit a slot (should stay 0).
    public private(set) var truncatedMessages = 0
    /// Packet messages whose attributes did not parse but whose id could be read: handed to the
    /// body with `decoded == false` (the caller accepts them). Those without a readable id
    /// count in `netlinkErrors` only; the kernel keeps them until a later accept batch or the
    /// socket closes.
    public private(set) var undecodedPackets = 0

    public init(_ socket: any QueueTransport) {
        self.socket = socket
        slots = max(1, socket.configuration.receiveBatch)
        slotSize = max(4096, Int(socket.configuration.copyRange) + 1024)
        storage = .allocate(byteCount: slots * slotSize, alignment: 16)
        iovecs = .allocate(capacity: slots)
        headers = .allocate(capacity: slots)
        attributeCount = Int(rg_nfqa_max()) + 1
        attributes = .allocate(capacity: attributeCount)
        for i in 0..<slots {
            iovecs[i] = iovec(iov_base: storage + i * slotSize, iov_len: slotSize)
        }
    }

    deinit {
        storage.deallocate()
        iovecs.deallocate()
        headers.deallocate()
        attributes.deallocate()
    }

    public var batchCapacity: Int { slots }

    /// Receives up to a batch of messages. `wait`: block (up to the socket's receive timeout) for
    /// the first one; otherwise return `.wouldBlock` at once when the socket is drained.
    public func receive(wait: Bool) throws(SystemCallError) -> IOResult<Int> {
        for i in 0..<slots {
            headers[i] = rg_mmsghdr()
            headers[i].msg_hdr.msg_iov = iovecs + i
            headers[i].msg_hdr.msg_iovlen = 1
        }
        do throws(SystemCallError) {
            let r = try socket.receiveMessages(headers, count: slots, wait: wait)
            if case .processed(let count) = r { received = count } else { received = 0 }
            return r
        } catch where error.errno == ENOBUFS {
            // The socket overran and the kernel told us (NETLINK_NO_ENOBUFS missing). The lost
            // packets were never ours to verdict (the kernel counted them in user_dropped and,
            // with FAIL_OPEN, accepted them); carry on reading.
            enobufs += 1
            received = 0
            return .processed(0)
        }
    }

    /// Calls `body` for every queued packet of the last receive, in arrival order (the kernel's
    /// id order, which the verdicts must keep).
    public func forEachPacket(_ body: (inout QueuedPacket) -> Void) {
        var packet = QueuedPacket()
        let wantType = Int32(NFNL_SUBSYS_QUEUE) << 8 | Int32(NFQNL_MSG_PACKET.rawValue)
        for i in 0..<received {
            if headers[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 { truncatedMessages += 1 }
            var remaining = Int32(min(Int(headers[i].msg_len), slotSize))
            var msg = (storage + i * slotSize).assumingMemoryBound(to: nlmsghdr.self)
            while rg_nlmsg_ok(msg, remaining) != 0 {
                let type = Int32(msg.pointee.nlmsg_type)
                if type == wantType {
                    if decode(msg, into: &packet) { body(&packet) } else if packet.idValid {
                        undecodedPackets += 1
                        body(&packet)
                    }
                } else if type == NLMSG_ERROR {
                    let err = mnl_nlmsg_get_payload(msg).assumingMemoryBound(to: nlmsgerr.self).pointee.error
                    if err != 0 { netlinkErrors += 1 }
                }
                msg = mnl_nlmsg_next(msg, &remaining)
            }
        }
        received = 0
    }

    private func decode(_ msg: UnsafeMutablePointer<nlmsghdr>, into p: inout QueuedPacket) -> Bool {
        for k in 0..<attributeCount { attributes[k] = nil }
        let parsed = nfq_nlmsg_parse(msg, attributes) >= 0
        // The attribute walk fills the table as it goes, so a message that fails validation
        // later on still has its NFQA_PACKET_HDR (the kernel puts it first) when that one was
        // whole: its id can still get a verdict of its own.
        let hdr = attributes[Int(NFQA_PACKET_HDR.rawValue)]
        let hdrWhole = hdr.map { mnl_attr_get_payload_len($0) >= 4 } ?? false
        p.idValid = hdrWhole
        p.decoded = false
        guard parsed, hdrWhole, let hdr else {
            netlinkErrors += 1
            if hdrWhole, let hdr {
                p.id = rg_nfq_packet_id(hdr)
                p.payload = UnsafeRawBufferPointer(start: nil, count: 0)
                p.length = 0
                p.timestamp = 0
                p.inInterface = 0
                p.outInterface = 0
            }
            return false
        }
        p.decoded = true
        p.id = rg_nfq_packet_id(hdr)
        if let a = attributes[Int(NFQA_PAYLOAD.rawValue)] {
            p.payload = UnsafeRawBufferPointer(start: mnl_attr_get_payload(a),
                                               count: Int(mnl_attr_get_payload_len(a)))
        } else {
            p.payload = UnsafeRawBufferPointer(start: nil, count: 0)
        }
        if let a = attributes[Int(NFQA_CAP_LEN.rawValue)] {
            p.length = Int(UInt32(bigEndian: mnl_attr_get_u32(a)))
        } else {
            p.length = p.payload.count
        }
        p.timestamp = attributes[Int(NFQA_TIMESTAMP.rawValue)].map { rg_nfq_timestamp_ns($0) } ?? 0
        p.inInterface = attributes[Int(NFQA_IFINDEX_INDEV.rawValue)].map { UInt32(bigEndian: mnl_attr_get_u32($0)) } ?? 0
        p.outInterface = attributes[Int(NFQA_IFINDEX_OUTDEV.rawValue)].map { UInt32(bigEndian: mnl_attr_get_u32($0)) } ?? 0
        return true
    }
}
