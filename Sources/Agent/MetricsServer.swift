#if canImport(Glibc)
import Glibc
#endif
import NFQueue

/// A minimal HTTP/1.0 server for Prometheus: GET /metrics answers the text exposition format,
/// anything else 404. One connection at a time on its own thread: scrapes come every few seconds,
/// and nothing here touches the packet path (it only reads the workers' counters).
final class MetricsServer: @unchecked Sendable {
    private let fd: Int32
    private let render: @Sendable () -> String
    private let shouldStop: @Sendable () -> Bool
    let boundPort: UInt16

    init(host: String, port: UInt16, render: @escaping @Sendable () -> String,
         shouldStop: @escaping @Sendable () -> Bool) throws(SystemCallError) {
        self.render = render
        self.shouldStop = shouldStop
        var storage = sockaddr_storage()
        var length: socklen_t
        let family: Int32
        if host.contains(":") {
            family = AF_INET6
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &a.sin6_addr) == 1 else { throw SystemCallError("inet_pton(\(host))", errno: EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            family = AF_INET
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw SystemCallError("inet_pton(\(host))", errno: EINVAL) }
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw SystemCallError("socket(metrics)", errno: errno) }
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, length) }
        }
        guard bound == 0, listen(s, 16) == 0 else {
            let e = errno
            Glibc.close(s)
            throw SystemCallError("bind/listen(metrics \(host):\(port))", errno: e)
        }
        // Port 0 asks the kernel for one; tests read back which.
        var actual = sockaddr_storage()
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
        }
        boundPort = withUnsafeBytes(of: actual) { raw in
            UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))   // sin_port / sin6_port
        }
        fd = s
    }

    /// How long one client may take in all, request and response: a client that connects and
    /// then trickles (or sends nothing) must not hold up the next scrape for long, whatever the
    /// per-call timeouts would allow.
    static let clientBudget: Int64 = 1_000_000_000

    func serve() {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let listener = fd
        while !shouldStop() {
            let ready: IOResult<Int32>
            do throws(SystemCallError) { ready = try syscall("poll(metrics)") { poll(&pfd, 1, 200) } } catch {
                usleep(100_000)   // ENOMEM: back off, the listener stays good
                continue
            }
            guard case .processed(let n) = ready, n > 0 else { continue }
            let accepted: IOResult<Int32>
            do throws(SystemCallError) {
                // accept4 is _GNU_SOURCE-only in the Glibc module: accept, then non-blocking.
                accepted = try syscall("accept(metrics)") { accept(listener, nil, nil) }
            } catch {
                // A client that gave up (ECONNABORTED, EPROTO) costs nothing; out of descriptors
                // or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) would make poll report the same
                // pending connection at once forever: back off instead of spinning.
                if error.errno != ECONNABORTED, error.errno != EPROTO { usleep(100_000) }
                continue
            }
            guard case .processed(let c) = accepted else { continue }
            let flags = fcntl(c, F_GETFL)
            guard flags >= 0, fcntl(c, F_SETFL, flags | O_NONBLOCK) == 0 else {
                Glibc.close(c)   // a blocking client socket would escape the deadline
                continue
            }
            handle(c, deadline: monotonicNanoseconds() + Self.clientBudget)
            Glibc.close(c)
        }
        Glibc.close(fd)
    }

    /// Waits until the client socket is ready for `events`; false once the deadline passed.
    private func wait(_ c: Int32, _ events: Int32, until deadline: Int64) -> Bool {
        var p = pollfd(fd: c, events: Int16(events), revents: 0)
        while true {
            let left = deadline - monotonicNanoseconds()
            guard left > 0 else { return false }
            let ms = Int32(min(left / 1_000_000 + 1, 1_000))
            guard case .processed(let n)? = try? syscall("poll(metrics client)", { poll(&p, 1, ms) }) else { return false }
            if n > 0 { return true }
        }
    }

    private func handle(_ c: Int32, deadline: Int64) {
        var buf = [UInt8](repeating: 0, count: 4096)
        var got = 0
        // Read until the end of the request head (or the buffer is full): only the request line
        // matters. The socket is non-blocking; every wait is bounded by the client's deadline.
        reading: while got < buf.count {
            let r: IOResult<Int>
            do throws(SystemCallError) {
                r = try syscall("recv(metrics)") {
                    buf.withUnsafeMutableBytes { recv(c, $0.baseAddress! + got, $0.count - got, 0) }
                }
            } catch {
                return   // ECONNRESET and the like: nobody to answer
            }
            switch r {
            case .wouldBlock:
                guard wait(c, Int32(POLLIN), until: deadline) else { return }
            case .processed(0):
                break reading   // the client closed its side: answer what it sent
            case .processed(let n):
                got += n
                if buf[..<got].contains(10) {
                    let text = String(decoding: buf[..<got], as: UTF8.self)
                    if text.contains("\r\n\r\n") || text.contains("\n\n") { break reading }
                }
            }
        }
        let head = String(decoding: buf[..<got], as: UTF8.self)
        let requestLine = head.split(separator: "\n").first.map(String.init) ?? ""
        let parts = requestLine.split(separator: " ")
        let response: String
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            let body = render()
            response = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        } else {
            let body = "not found: try /metrics\n"
            response = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + body
        }
        let bytes = Array(response.utf8)
        var sent = 0
        while sent < bytes.count {
            let r: IOResult<Int>
            do throws(SystemCallError) {
                r = try syscall("send(metrics)") {
                    bytes.withUnsafeBytes { send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                }
            } catch {
                return   // EPIPE, ECONNRESET: the client left
            }
            switch r {
            case .wouldBlock:
                guard wait(c, Int32(POLLOUT), until: deadline) else { return }
            case .processed(let n):
                sent += n
            }
        }
    }
}
