#if canImport(Glibc)
import Glibc
#endif
import NFQueue

/// The agent's side of the control channel (`ControlChannel`), served from the lifecycle loop,
/// which also takes the signals: so it never waits on a client. Each `step` accepts what waits,
/// reads what has arrived, answers whole requests and drops the clients past their deadline.
///
/// Hostile or broken clients cost a slot and nothing else: a peer that may not control the agent
/// is refused at accept (SO_PEERCRED, before a byte of it is looked at); a request is one line of at
/// most `lineLimit` bytes; a client that sends nothing, or half a line and holds the connection
/// (slowloris), is closed at its deadline; past `maxClients` waiting the oldest gives way; a
/// client that never reads its reply finds it in its socket buffer (sent without waiting, at most
/// `replyLimit` bytes, what the client reads) and the connection closed.
final class ControlServer {
    struct Limits {
        /// How long a client has to send its request line.
        var requestDeadline: Int64 = Int64(ControlChannel.requestDeadline) * 1_000_000
        /// Clients waiting for their line at once; a new one evicts the oldest.
        var maxClients = 16
    }

    static let lineLimit = 64
    static let replyLimit = 1 << 16

    private struct Client {
        let fd: Int32
        let deadline: Int64
        var bytes: [UInt8] = []
    }

    private let listener: Int32
    private let limits: Limits
    private let authorized: (UInt32) -> Bool
    private var clients: [Client] = []

    /// Connections closed without an answer: past their deadline or evicted for room.
    private(set) var dropped = 0

    /// `listener`: a listening, non-blocking UNIX stream socket (owned by the caller).
    /// `authorized`: which peer uids may send requests (root and the agent's own user).
    init(listener: Int32, limits: Limits = Limits(), authorized: @escaping (UInt32) -> Bool = { $0 == 0 || $0 == getuid() }) {
        self.listener = listener
        self.limits = limits
        self.authorized = authorized
    }

    deinit { for c in clients { close(c.fd) } }

    /// Clients that connected and have not sent their whole line yet: the loop looks again soon.
    var waiting: Int { clients.count }

    func step(now: Int64 = monotonicNanoseconds(), _ handle: (ControlChannel.Command) -> ControlChannel.Reply) {
        var i = 0
        while i < clients.count {
            if serve(&clients[i], now: now, handle) { clients.remove(at: i) } else { i += 1 }
        }
        // Then every connection the backlog holds (64 at most: its size), each read at once, so a
        // request already sent is answered before anyone is evicted for room.
        for _ in 0..<64 {
            guard case .processed(let fd)? = try? syscall("accept(control)", { accept(listener, nil, nil) }) else { return }
            // accept4 does not import (it needs _GNU_SOURCE): the flags one by one. Close-on-exec
            // although the children the agent starts close every descriptor but 0-2 anyway.
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let uid = ControlChannel.peerUID(fd)
            guard let uid, authorized(uid) else {
                let who = uid.map { "uid \($0)" } ?? "a peer without credentials"
                send(fd, .refused(exitCode: 1, message: "\(who) may not control the agent (root or uid \(getuid()) only)"))
                // What it sent already is taken unread: a UNIX socket closed with bytes in its
                // queue resets the peer (ECONNRESET), which would lose it the refusal.
                var sink = [UInt8](repeating: 0, count: Self.lineLimit + 1)
                _ = sink.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                close(fd)
                continue
            }
            var c = Client(fd: fd, deadline: now + limits.requestDeadline)
            if serve(&c, now: now, handle) { continue }
            if clients.count >= limits.maxClients {
                let oldest = clients.removeFirst()
                dropped += 1
                close(oldest.fd)
            }
            clients.append(c)
        }
    }

    /// Reads what has arrived and answers a whole request, or refuses a client past its
    /// deadline; true when the client is done with (its connection closed).
    private func serve(_ c: inout Client, now: Int64, _ handle: (ControlChannel.Command) -> ControlChannel.Reply) -> Bool {
        if let request = receive(&c) {
            if let line = request { answer(c.fd, line, handle) }
            close(c.fd)
            return true
        }
        guard now >= c.deadline else { return false }
        dropped += 1
        send(c.fd, .refused(exitCode: 2, message: "no request line within \(limits.requestDeadline / 1_000_000) ms"))
        close(c.fd)
        return true
    }

    /// nil: nothing whole yet. `.some(nil)`: the client is done without a request (it closed
    /// without sending: somebody asking who holds the lock; or an error). `.some(line)`: a request,
    /// or what stood in for one (a line too long, an end of file after part of a line).
    private func receive(_ c: inout Client) -> String?? {
        var chunk = [UInt8](repeating: 0, count: Self.lineLimit + 1)
        while true {
            let room = Self.lineLimit + 1 - c.bytes.count
            let got = chunk.withUnsafeMutableBytes { b in try? syscall("read(control)") { read(c.fd, b.baseAddress, room) } }
            guard let got else { return .some(nil) }
            guard case .processed(let n) = got else { return nil }
            if n == 0 { return c.bytes.isEmpty ? .some(nil) : .some(Self.text(c.bytes[...])) }
            c.bytes += chunk[0..<n]
            if let nl = c.bytes.firstIndex(of: 0x0a), nl <= Self.lineLimit { return .some(Self.text(c.bytes[..<nl])) }
            if c.bytes.count > Self.lineLimit { return .some(Self.text(c.bytes[...])) }
        }
    }

    private func answer(_ fd: Int32, _ line: String, _ handle: (ControlChannel.Command) -> ControlChannel.Reply) {
        let reply: ControlChannel.Reply
        if line.utf8.count > Self.lineLimit {
            reply = .refused(exitCode: 2, message: "request longer than \(Self.lineLimit) bytes")
        } else if let command = ControlChannel.Command(rawValue: line) {
            reply = handle(command)
        } else {
            let known = ControlChannel.Command.allCases.map(\.rawValue).joined(separator: ", ")
            reply = .refused(exitCode: 2, message: "unknown request '\(line)' (\(known))")
        }
        send(fd, reply)
    }

    /// Without waiting: a client that does not read gets what its socket buffer takes (a whole
    /// reply of `replyLimit` bytes fits in a UNIX socket's default buffer), the rest is dropped.
    private func send(_ fd: Int32, _ reply: ControlChannel.Reply) {
        let bytes = Array(reply.encoded.utf8.prefix(Self.replyLimit))
        var sent = 0
        while sent < bytes.count {
            let r = bytes[sent...].withUnsafeBytes { b in
                try? syscall("send(control)") { Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            }
            guard case .processed(let n)? = r, n > 0 else { return }
            sent += n
        }
    }

    /// The request as text to echo back: printable ASCII kept, every other byte `?`, so binary
    /// garbage never reaches the client's terminal as control sequences.
    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.map { (0x20..<0x7f).contains($0) ? $0 : 0x3f }, as: UTF8.self)
    }
}
