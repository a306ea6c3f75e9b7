#if canImport(Glibc)
import Glibc
#endif
import CConntrack
import NFQueue
import VerdictEngine

/// A ctnetlink socket: either subscribed to conntrack's NEW / UPDATE / DESTROY events, or used
/// for one dump of the table. Non-blocking; the caller polls `fd`.
///
/// Events are not guaranteed: when the socket's buffer overruns, the kernel drops events and the
/// next receive fails with ENOBUFS (NETLINK_NO_ENOBUFS is deliberately not set, so the loss is
/// seen). The reader then counts it and dumps the table again.
public final class ConntrackSocket {
    private let netlink: NetlinkSocket
    public var fd: Int32 { netlink.fd }
    private let buffer: UnsafeMutableRawBufferPointer
    private var sequence: UInt32

    /// Messages that did not parse, and ENOBUFS seen.
    public private(set) var malformed = 0
    public private(set) var overruns = 0

    /// Events: the receive buffer is sized for bursts (a flood of new flows on a busy router makes
    /// one NEW and several UPDATEs each); `bufferBytes` through SO_RCVBUFFORCE (CAP_NET_ADMIN).
    public init(events: Bool, bufferBytes: Int = 16 << 20) throws(SystemCallError) {
        netlink = try NetlinkSocket(receiveBufferBytes: bufferBytes, groups: events ? rg_ct_event_groups : 0) {
            (fd) throws(SystemCallError) in
            let flags = try syscallValue("fcntl(ctnetlink, F_GETFL)") { fcntl(fd, F_GETFL) }
            _ = try syscallValue("fcntl(ctnetlink, O_NONBLOCK)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        }
        sequence = UInt32(truncatingIfNeeded: time(nil))
        // One receive takes whole messages; a dump reply batch fits a page or two, an event one.
        buffer = .allocate(byteCount: max(rg_ct_socket_buffer_size(), 32768), alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// Closes the socket now (the buffer goes with the object).
    public func close() { netlink.close() }

    public enum Received {
        /// Messages read (facts handed on, others ignored).
        case messages(Int)
        case wouldBlock
        /// ENOBUFS: events were lost; dump again.
        case overrun
        /// A dump's NLMSG_DONE (or its error) was among the messages.
        case dumpEnded(errno: Int32)
    }

    /// Reads what one recv returns and hands each fact on.
    public func receive(_ body: (ConntrackFact) -> Void) throws(SystemCallError) -> Received {
        let fd = self.fd, buf = buffer
        let r: IOResult<Int>
        do throws(SystemCallError) {
            r = try syscall("recv(ctnetlink)") { recv(fd, buf.baseAddress, buf.count, Int32(MSG_DONTWAIT)) }
        } catch where error.errno == ENOBUFS {
            overruns += 1
            return .overrun
        }
        guard case .processed(let n) = r else { return .wouldBlock }
        var count = 0
        var ended: Int32? = nil
        ConntrackMessage.forEach(in: UnsafeRawBufferPointer(rebasing: buf[0..<n])) { m in
            count += 1
            switch m {
            case .fact(let f): body(f)
            case .done: ended = 0
            case .error(let e): if e != 0 { ended = -e }
            case .malformed: malformed += 1
            case .ignored: break
            }
        }
        if let ended { return .dumpEnded(errno: ended) }
        return .messages(count)
    }

    /// Asks for the whole table of one address family; the replies arrive through `receive`,
    /// ending with `.dumpEnded`. One dump at a time per socket: a second request while one runs
    /// fails with EBUSY.
    public func requestDump(family: UInt8) throws(SystemCallError) {
        sequence &+= 1
        let nlh = rg_ct_put_dump(buffer.baseAddress, family, sequence)!
        let len = Int(nlh.pointee.nlmsg_len)
        guard case .processed = try netlink.send(UnsafeRawBufferPointer(start: nlh, count: len), name: "mnl_socket_sendto(ctnetlink dump)") else {
            throw SystemCallError("mnl_socket_sendto(ctnetlink dump)", errno: EAGAIN)
        }
    }

    /// Reads a whole dump (IPv4, then IPv6) into `body`, waiting up to `timeout` seconds in all.
    public func dump(timeout: Double = 5, _ body: (ConntrackFact) -> Void) throws(SystemCallError) -> Int {
        var facts = 0
        let deadline = monotonicNanoseconds() + Int64(timeout * 1e9)
        for family in [UInt8(AF_INET), UInt8(AF_INET6)] {
            try requestDump(family: family)
            reading: while true {
                switch try receive({ facts += 1; body($0) }) {
                case .dumpEnded(let e):
                    if e != 0 { throw SystemCallError("ctnetlink dump", errno: e) }
                    break reading
                case .overrun:
                    // A dump reply lost to a full buffer: the dump is incomplete, start over.
                    throw SystemCallError("ctnetlink dump", errno: ENOBUFS)
                case .messages: continue
                case .wouldBlock:
                    let left = deadline - monotonicNanoseconds()
                    guard left > 0 else { throw SystemCallError("ctnetlink dump", errno: ETIMEDOUT) }
                    _ = try pollOne(fd, timeoutMilliseconds: Int32(min(left / 1_000_000 + 1, 1000)), name: "poll(ctnetlink dump)")
                }
            }
        }
        return facts
    }

    /// One whole dump on a socket of its own, closed after: the start's seeding and the feed's
    /// re-dumps. 4 MiB of receive buffer: a dump reply batch is a page or two, and the reader
    /// keeps up.
    public static func dumpTable(timeout: Double = 5, _ body: (ConntrackFact) -> Void) throws(SystemCallError) -> Int {
        let socket = try ConntrackSocket(events: false, bufferBytes: 4 << 20)
        defer { socket.close() }
        return try socket.dump(timeout: timeout, body)
    }
}

/// Whether this network namespace's kernel will give the agent what `state = conntrack` needs,
/// read from /proc/sys (no privilege needed). Each problem is one line for a warning.
public enum ConntrackReadiness {
    public static func problems(rulesText: String?) -> [String] {
        var out: [String] = []
        let base = "/proc/sys/net/netfilter/"
        guard let _ = read(base + "nf_conntrack_max") else {
            return ["conntrack is not available in this kernel or network namespace (no /proc/sys/net/netfilter/nf_conntrack_max): state = conntrack learns nothing"]
        }
        if let events = read(base + "nf_conntrack_events"), events == "0" {
            out.append("conntrack events are off (net.netfilter.nf_conntrack_events = 0): the agent learns no new flows; set it to 1 (or 2, on demand)")
        }
        if let loose = read(base + "nf_conntrack_tcp_loose"), loose != "0" {
            out.append("net.netfilter.nf_conntrack_tcp_loose = \(loose): with conntrackd re-creating entries, 0 avoids insert clashes that drop a few packets")
        }
        if let text = rulesText, !hasConntrackExpression(text) {
            out.append("the rules load no ct expression: conntrack does not track flows in this network namespace unless other rules make it (use the default rules with state = conntrack)")
        }
        return out
    }

    /// Whether a rendered ruleset has a `ct` expression outside comments (any one makes the
    /// kernel track the namespace's flows).
    public static func hasConntrackExpression(_ text: String) -> Bool {
        for line in text.split(separator: "\n") {
            let code = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = code.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let i = words.firstIndex(of: "ct"), i + 1 < words.count { return true }
        }
        return false
    }

    private static func read(_ path: String) -> String? {
        guard let bytes = try? readFile(path, limit: 64) else { return nil }
        let line = bytes.prefix { $0 != 0x0a }
        return String(decoding: line, as: UTF8.self).filter { $0 != " " && $0 != "\t" }
    }
}

/// A wake-up another thread can poll: an eventfd (the conntrack feed tells a worker that facts
/// wait). `signal` never blocks; `clear` empties it. Sendable as it is: an immutable descriptor,
/// and the kernel serialises what is done to it.
public final class Wakeup: Sendable {
    public let fd: Int32

    public init() throws(SystemCallError) {
        fd = try syscallValue("eventfd") { rg_eventfd() }
    }

    deinit { Glibc.close(fd) }

    public func signal() {
        var one: UInt64 = 1
        // EAGAIN: the counter is at its maximum, the worker is woken anyway.
        _ = try? syscall("write(eventfd)") { write(fd, &one, 8) }
    }

    public func clear() {
        var v: UInt64 = 0
        _ = try? syscall("read(eventfd)") { read(fd, &v, 8) }
    }
}
