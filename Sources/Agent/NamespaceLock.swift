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

    /// The control requests' server on the lock's socket (`ControlServer`): a connection that
    /// sends nothing and closes is somebody asking who holds the lock; the others are requests.
    /// Abstract sockets have no file permissions (anyone in the namespace can connect), so the
    /// server checks each peer's credentials.
    func controlServer() -> ControlServer { ControlServer(listener: fd) }

    /// Non-blocking (neither an ask nor a drain may ever wait) and close-on-exec (a child that
    /// outlived the agent must not hold the lock).
    private static func openSocket() throws(SystemCallError) -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw SystemCallError("socket(AF_UNIX)", errno: errno) }
        return s
    }

    /// The abstract address: a NUL, then the name, and a length that stops right after it (the
    /// rest of sun_path would be part of the name).
    static func withAddress(name: String = "reflectguard", _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let name = Array(name.utf8.prefix(MemoryLayout.size(ofValue: a.sun_path) - 1))
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
