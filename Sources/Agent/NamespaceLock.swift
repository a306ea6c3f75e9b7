#if canImport(Glibc)
import Glibc
#endif
import NFQueue

/// One agent per network namespace: the agent binds the abstract UNIX socket `@reflectguard`
/// for its whole life. The abstract socket names belong to the network namespace (a lock file in
/// /run would be one lock for every namespace of the machine), and the kernel frees the name
/// when the process dies however it dies, SIGKILL included, so a crashed agent never leaves a
/// stale lock behind.
///
/// Anyone can ask who holds it: connecting is enough, because the kernel hands the connecting
/// side the listener's credentials (SO_PEERCRED, filled in at connect time), so the agent never
/// has to answer. It only has to `drain` those connections now and then (each waits in its
/// backlog until accepted).
public final class NamespaceLock {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    public enum Holder: Equatable {
        case nobody
        /// `pid` nil: an agent holds it, but its backlog is full and it did not say who it is.
        case agent(pid: Int32?)
    }

    /// Takes the lock, or says who holds it.
    public static func acquire() throws(SystemCallError) -> Result<NamespaceLock, HeldError> {
        // Twice: the holder may exit between our bind and our question.
        for _ in 0..<2 {
            let s = try openSocket()
            let bound = withAddress { bind(s, $0, $1) }
            if bound == 0 {
                guard listen(s, 64) == 0 else {
                    let e = errno
                    close(s)
                    throw SystemCallError("listen(@reflectguard)", errno: e)
                }
                return .success(NamespaceLock(fd: s))
            }
            let e = errno
            close(s)
            guard e == EADDRINUSE else { throw SystemCallError("bind(@reflectguard)", errno: e) }
            if case .agent(let pid) = holder() { return .failure(HeldError(pid: pid)) }
        }
        return .failure(HeldError(pid: nil))
    }

    /// Who holds the lock in this process's network namespace.
    public static func holder() -> Holder {
        guard let s = try? openSocket() else { return .nobody }
        defer { close(s) }
        let connected = withAddress { connect(s, $0, $1) }
        guard connected == 0 else {
            // ECONNREFUSED: nobody listens on the name. EAGAIN: a full backlog, so somebody does.
            return errno == EAGAIN ? .agent(pid: nil) : .nobody
        }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }, which Glibc's module does not export.
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(s, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.0 > 0 else {
            return .agent(pid: nil)
        }
        return .agent(pid: credentials.0)
    }

    /// Accepts and closes the connections of those who asked: their backlog slots are ours to free.
    public func drain() {
        while case .processed(let c)? = try? syscall("accept(@reflectguard)", { accept(fd, nil, nil) }) {
            close(c)
        }
    }

    /// Waits up to `milliseconds` for a connection (the lifecycle loop's tick).
    func waitForConnection(milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, milliseconds) > 0
    }

    /// Accepts every waiting connection and answers the control requests among them
    /// (`ControlChannel`): a connection that sends nothing and closes is somebody asking who holds
    /// the lock. Only root and the agent's own user may send a request (abstract sockets have no
    /// file permissions: anyone in the namespace can connect); a request must arrive within
    /// `ControlChannel.requestDeadline`, so a client that connects and stalls holds nobody up.
    func serve(_ handle: (ControlChannel.Command) -> ControlChannel.Reply) {
        while case .processed(let c)? = try? syscall("accept(@reflectguard)", { accept(fd, nil, nil) }) {
            defer { close(c) }
            // accept4 does not import (it needs _GNU_SOURCE); the children the agent starts close
            // every descriptor but 0-2 anyway (NftBackend.Spawn).
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            guard let line = ControlChannel.readLine(c, deadlineMilliseconds: ControlChannel.requestDeadline), !line.isEmpty else {
                continue
            }
            let reply: ControlChannel.Reply
            let uid = ControlChannel.peerUID(c)
            if uid != 0 && uid != getuid() {
                let who = uid.map { "uid \($0)" } ?? "a peer without credentials"
                reply = .refused(exitCode: 1, message: "\(who) may not control the agent (root or uid \(getuid()) only)")
            } else if let command = ControlChannel.Command(rawValue: line) {
                reply = handle(command)
            } else {
                reply = .refused(exitCode: 2, message: "unknown request '\(line)' (\(ControlChannel.Command.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            ControlChannel.write(c, reply.encoded)
        }
    }

    /// Non-blocking (neither an ask nor a drain may ever wait) and close-on-exec (a child that
    /// outlived the agent must not hold the lock).
    private static func openSocket() throws(SystemCallError) -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw SystemCallError("socket(AF_UNIX)", errno: errno) }
        return s
    }

    /// The abstract address: a NUL, then the name, and a length that stops right after it (the
    /// rest of sun_path would be part of the name).
    static func withAddress(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let name = Array("reflectguard".utf8)
        withUnsafeMutableBytes(of: &a.sun_path) { path in
            path[0] = 0
            for (i, b) in name.enumerated() { path[1 + i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.count)
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

/// Another agent holds the namespace lock.
public struct HeldError: Error, CustomStringConvertible {
    public let pid: Int32?
    public var description: String {
        let who = pid.map { "another reflectguard agent (pid \($0))" } ?? "another reflectguard agent"
        return "\(who) runs in this network namespace and owns its queues and table inet reflectguard; "
            + "stop it first (one agent serves several queues: --queue N:M)"
    }
}
