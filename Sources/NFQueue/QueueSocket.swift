#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// One bound NFQUEUE queue on its own netlink socket (libnetfilter_queue's libmnl API, as in the
/// library's examples/nf-queue.c): open, size the buffer, bind, configure one message at a time
/// with each checked by its ACK, then hand the descriptor to a `PacketReceiver` and a
/// `VerdictBatcher`.
public final class QueueSocket: QueueTransport {
    public let configuration: QueueConfiguration
    public var queue: UInt16 { configuration.queue }
    /// Features the kernel refused, each a line for the start-up log (they degrade, not fail).
    public private(set) var warnings: [String] = []
    /// Packets that arrived while a config ACK was awaited; they were accepted on the spot.
    public private(set) var acceptedDuringSetup = 0

    private let netlink: NetlinkSocket
    public var fd: Int32 { netlink.fd }
    var portID: UInt32 { netlink.portID }
    private var sequence: UInt32
    private var bound = false
    private var closed = false
    /// One page-or-more buffer for config messages and their ACKs (setup only, never per packet).
    private let controlBuffer: UnsafeMutableRawBufferPointer

    public init(_ configuration: QueueConfiguration) throws(SystemCallError) {
        self.configuration = configuration
        var optionWarnings: [String] = []
        netlink = try NetlinkSocket(receiveBufferBytes: configuration.effectiveReceiveBufferBytes) {
            (fd) throws(SystemCallError) in try Self.setOptions(fd, warnings: &optionWarnings)
        }
        warnings = (netlink.receiveBufferWarning.map { [$0] } ?? []) + optionWarnings
        sequence = UInt32(truncatingIfNeeded: time(nil))
        controlBuffer = .allocate(byteCount: max(rg_mnl_socket_buffer_size(), 8192), alignment: 8)
        do {
            try bindAndConfigure()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private static func setOptions(_ fd: Int32, warnings: inout [String]) throws(SystemCallError) {
        let len = socklen_t(MemoryLayout<Int32>.size)
        // With NETLINK_NO_ENOBUFS the kernel stops reporting receive-buffer overruns as ENOBUFS;
        // losses are read from /proc's user_dropped instead. Where the option is missing the
        // receive loop treats ENOBUFS as "some messages were lost" and carries on.
        var one: Int32 = 1
        do throws(SystemCallError) {
            _ = try syscallValue("setsockopt(NETLINK_NO_ENOBUFS)") { setsockopt(fd, Int32(SOL_NETLINK), NETLINK_NO_ENOBUFS, &one, len) }
        } catch {
            warnings.append("NETLINK_NO_ENOBUFS unavailable (\(error.reason)); ENOBUFS will be counted")
        }
        // Extended ACKs give the kernel's reason text on config errors; optional.
        _ = try? syscallValue("setsockopt(NETLINK_EXT_ACK)") { setsockopt(fd, Int32(SOL_NETLINK), NETLINK_EXT_ACK, &one, len) }
        // A receive timeout lets a blocked worker notice shutdown without a wake-up pipe.
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        _ = try syscallValue("setsockopt(SO_RCVTIMEO)") {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    private func bindAndConfigure() throws(SystemCallError) {
        let q = UInt32(configuration.queue)
        // Bind and copy parameters in ONE message: the kernel applies the command first and then
        // the parameters, so no packet is ever queued to us in the default copy-none mode.
        var nlh = configHeader(q)
        nfq_nlmsg_cfg_put_cmd(nlh, UInt16(AF_UNSPEC), UInt8(NFQNL_CFG_CMD_BIND.rawValue))
        nfq_nlmsg_cfg_put_params(nlh, UInt8(NFQNL_COPY_PACKET.rawValue), Int32(configuration.copyRange))
        try sendAndAwaitAck(nlh, what: "bind queue \(q) (another process may hold it)")
        bound = true

        nlh = configHeader(q)
        nfq_nlmsg_cfg_put_qmaxlen(nlh, configuration.maxLength)
        do { try sendAndAwaitAck(nlh, what: "queue maxlen") } catch {
            warnings.append("queue maxlen \(configuration.maxLength) refused: \(error); kernel default (1024) stays")
        }

        // ONE NFQA_CFG_FLAGS attribute with every flag: the kernel keeps only the last attribute
        // of a type, so two messages or two attributes would lose a flag.
        var flags: UInt32 = 0
        if configuration.failOpen { flags |= rg_nfqa_cfg_f_fail_open }
        if configuration.gso { flags |= rg_nfqa_cfg_f_gso }
        if flags != 0 {
            nlh = configHeader(q)
            mnl_attr_put_u32(nlh, UInt16(NFQA_CFG_FLAGS.rawValue), flags.bigEndian)
            mnl_attr_put_u32(nlh, UInt16(NFQA_CFG_MASK.rawValue), flags.bigEndian)
            do { try sendAndAwaitAck(nlh, what: "queue flags") } catch {
                warnings.append("queue flags FAIL_OPEN|GSO refused: \(error); a full queue will drop")
            }
        }
    }

    private func configHeader(_ queue: UInt32) -> UnsafeMutablePointer<nlmsghdr> {
        let nlh = nfq_nlmsg_put(controlBuffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                Int32(NFQNL_MSG_CONFIG.rawValue), queue)!
        sequence &+= 1
        nlh.pointee.nlmsg_seq = sequence
        nlh.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
        return nlh
    }

    /// Sends one config message and reads until its ACK (or error) arrives. Packets queued in the
    /// meantime (another config step after the bind) are accepted at once: each still gets
    /// exactly one verdict.
    private func sendAndAwaitAck(_ nlh: UnsafeMutablePointer<nlmsghdr>, what: String) throws(SystemCallError) {
        let seq = nlh.pointee.nlmsg_seq
        let length = Int(nlh.pointee.nlmsg_len)
        _ = try netlink.send(UnsafeRawBufferPointer(start: nlh, count: length), name: "mnl_socket_sendto(\(what))")
        let buf = controlBuffer
        let fd = self.fd
        let deadline = monotonicNanoseconds() + 2_000_000_000
        while monotonicNanoseconds() < deadline {
            let n: Int
            switch try syscall("recv(ack: \(what))", { recv(fd, buf.baseAddress, buf.count, 0) }) {
            case .wouldBlock: continue
            case .processed(let v): n = v
            }
            var msg = UnsafeMutableRawPointer(buf.baseAddress!).assumingMemoryBound(to: nlmsghdr.self)
            var remaining = Int32(n)
            while rg_nlmsg_ok(msg, remaining) != 0 {
                let type = Int32(msg.pointee.nlmsg_type)
                if type == NLMSG_ERROR, msg.pointee.nlmsg_seq == seq {
                    let err = mnl_nlmsg_get_payload(msg).assumingMemoryBound(to: nlmsgerr.self).pointee.error
                    if err == 0 { return }
                    throw SystemCallError(what, errno: -err)
                }
                if type >> 8 == NFNL_SUBSYS_QUEUE, type & 0xff == Int32(NFQNL_MSG_PACKET.rawValue) {
                    acceptStray(msg)
                }
                msg = mnl_nlmsg_next(msg, &remaining)
            }
        }
        throw SystemCallError("\(what): no ACK within 2 s", errno: ETIMEDOUT)
    }

    private func acceptStray(_ msg: UnsafeMutablePointer<nlmsghdr>) {
        var attrs = [UnsafeMutablePointer<nlattr>?](repeating: nil, count: Int(rg_nfqa_max()) + 1)
        guard nfq_nlmsg_parse(msg, &attrs) >= 0, let hdr = attrs[Int(NFQA_PACKET_HDR.rawValue)] else { return }
        var out = [UInt8](repeating: 0, count: 64)
        out.withUnsafeMutableBytes { raw in
            let v = nfq_nlmsg_put(raw.baseAddress!.assumingMemoryBound(to: CChar.self),
                                  Int32(NFQNL_MSG_VERDICT.rawValue), UInt32(configuration.queue))!
            nfq_nlmsg_verdict_put(v, Int32(bitPattern: rg_nfq_packet_id(hdr)), NF_ACCEPT)
            // Best effort, as before: a stray whose accept is lost waits for a later accept batch.
            _ = try? netlink.send(UnsafeRawBufferPointer(start: v, count: Int(v.pointee.nlmsg_len)), name: "sendto(setup accept)")
        }
        acceptedDuringSetup += 1
    }

    /// Sends a prepared buffer of netlink messages (verdicts) in one system call. ENOBUFS/ENOMEM
    /// (the kernel could not allocate) and EAGAIN are retried a few times; the error thrown then
    /// names the last failure.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(SystemCallError) {
        var attempts = 0
        while true {
            // What the last attempt failed with, so the final error says what really happened
            // (a full send buffer is EAGAIN, not ENOBUFS).
            let failed: Int32
            do {
                if case .processed = try netlink.send(bytes, name: "mnl_socket_sendto(verdicts)") { return }
                failed = EAGAIN
            } catch {
                guard error.errno == ENOBUFS || error.errno == ENOMEM else { throw error }
                failed = error.errno
            }
            attempts += 1
            if attempts > 3 { throw SystemCallError("mnl_socket_sendto(verdicts)", errno: failed) }
            usleep(100)
        }
    }

    /// recvmmsg on the queue's socket: one system call per batch of queued packets.
    public func receiveMessages(_ headers: UnsafeMutablePointer<rg_mmsghdr>, count: Int, wait: Bool) throws(SystemCallError) -> IOResult<Int> {
        let flags = wait ? rg_msg_waitforone : Int32(MSG_DONTWAIT)
        let fd = self.fd
        return try syscall("recvmmsg(queue \(queue))") { rg_recvmmsg(fd, headers, UInt32(count), flags, nil) }.map { Int($0) }
    }

    /// Unbinds the queue: from here on the queue rule's bypass accepts new packets in the kernel.
    /// Call after the last verdict has been sent. Safe to call twice.
    public func unbind() {
        guard bound, !closed else { return }
        bound = false
        let nlh = configHeader(UInt32(configuration.queue))
        nfq_nlmsg_cfg_put_cmd(nlh, UInt16(AF_UNSPEC), UInt8(NFQNL_CFG_CMD_UNBIND.rawValue))
        do { try sendAndAwaitAck(nlh, what: "unbind") } catch {
            // Closing the socket unbinds too; nothing more to do.
        }
    }

    public func close() {
        guard !closed else { return }
        closed = true
        netlink.close()
        controlBuffer.deallocate()
    }
}
