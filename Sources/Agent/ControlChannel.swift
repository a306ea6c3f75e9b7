#if canImport(Glibc)
import Glibc
#endif
import NFQueue

/// Synchronous requests to the running agent over its namespace lock (`@reflectguard`), so
/// `systemctl reload` learns whether the new configuration was taken: a signal (SIGHUP) cannot
/// carry an answer back, and systemd reports only `ExecReload`'s exit status.
///
/// A request is one line (`reload`, `stop`); the reply is a first line `ok` or `refused N` (N: the
/// exit code the client should end with, 3 for a rules error), then a message, then EOF.
public enum ControlChannel {
    public enum Command: String, CaseIterable, Sendable {
        /// Check and apply the rules and configuration again; the reply says whether they were taken.
        case reload
        /// Shut down as on SIGTERM (rules removed); the reply comes before the shutdown.
        case stop
    }

    public enum Reply: Equatable, Sendable {
        case ok(String)
        case refused(exitCode: Int32, message: String)

        var encoded: String {
            switch self {
            case .ok(let m): return "ok\n" + m
            case .refused(let code, let m): return "refused \(code)\n" + m
            }
        }

        init?(decoding text: String) {
            guard let nl = text.firstIndex(of: "\n") else {
                if text == "ok" { self = .ok(""); return }
                return nil
            }
            let head = text[..<nl]
            let body = String(text[text.index(after: nl)...])
            if head == "ok" { self = .ok(body); return }
            let words = head.split(separator: " ")
            guard words.count == 2, words[0] == "refused", let code = Int32(words[1]) else { return nil }
            self = .refused(exitCode: code, message: body)
        }
    }

    /// How long the agent waits for a connected client's request line.
    static let requestDeadline: Int32 = 500

    /// Sends `command` to the agent of this network namespace and waits up to `timeout` seconds
    /// for its reply. nil with a reason when there is no agent or it did not answer.
    /// (`socketName`: another abstract name than the agent's, for tests.)
    public static func send(_ command: Command, timeout: Int32, socketName: String = "reflectguard") -> Result<Reply, ClientError> {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return .failure(ClientError("socket(AF_UNIX): \(String(cString: strerror(errno)))")) }
        defer { close(s) }
        let connected = NamespaceLock.withAddress(name: socketName) { connect(s, $0, $1) }
        guard connected == 0 else {
            if errno == ECONNREFUSED || errno == ENOENT {
                return .failure(ClientError("no reflectguard agent runs in this network namespace", noAgent: true))
            }
            return .failure(ClientError("connect(@reflectguard): \(String(cString: strerror(errno)))"))
        }
        write(s, command.rawValue + "\n")
        shutdown(s, Int32(SHUT_WR))
        guard let text = readAll(s, deadlineMilliseconds: timeout * 1000) else {
            return .failure(ClientError("the agent did not answer within \(timeout) s"))
        }
        guard let reply = Reply(decoding: text) else {
            return .failure(ClientError("the agent gave no answer to '\(command.rawValue)' (an agent older than this command? "
                                        + "'systemctl restart reflectguard' or SIGHUP)"))
        }
        return .success(reply)
    }

    public struct ClientError: Error, CustomStringConvertible {
        public var description: String
        public var noAgent = false
        init(_ d: String, noAgent: Bool = false) { description = d; self.noAgent = noAgent }
    }

    /// SO_PEERCRED's uid of a connected peer.
    static func peerUID(_ fd: Int32) -> UInt32? {
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else { return nil }
        return credentials.1
    }

    static func readAll(_ fd: Int32, deadlineMilliseconds: Int32, limit: Int = 1 << 16,
                        stopAtNewline: Bool = false) -> String? {
        let deadline = monotonicNanoseconds() + Int64(deadlineMilliseconds) * 1_000_000
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let left = deadline - monotonicNanoseconds()
            guard left > 0 else { return nil }
            let wait = Int32(min(left / 1_000_000 + 1, Int64(Int32.max)))
            guard let ready = try? pollOne(fd, timeoutMilliseconds: wait, name: "poll(control)") else { return nil }
            if case .wouldBlock = ready { continue }
            let room = limit - bytes.count
            let got = chunk.withUnsafeMutableBytes { c in try? syscall("read(control)") { read(fd, c.baseAddress, min(c.count, room)) } }
            guard let got else { return nil }
            guard case .processed(let n) = got else { continue }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if stopAtNewline, chunk[0..<n].contains(0x0a) { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @discardableResult
    static func write(_ fd: Int32, _ text: String) -> Bool {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { b in try? syscallValue("send(control)") { Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL)) } }
            guard let n = sent else { return false }
            bytes = bytes.dropFirst(n)
        }
        return true
    }
}
