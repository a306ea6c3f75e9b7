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

    func serve() {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while !shouldStop() {
            let r = poll(&pfd, 1, 200)
            if r <= 0 { continue }
            let c = accept(fd, nil, nil)
            if c < 0 { continue }
            handle(c)
            Glibc.close(c)
        }
        Glibc.close(fd)
    }

    private func handle(_ c: Int32) {
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 4096)
        var got = 0
        // Read until the end of the request head (or the buffer is full): only the request line
        // matters.
        while got < buf.count {
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress! + got, $0.count - got, 0) }
            if n <= 0 { break }
            got += n
            if buf[..<got].contains(10) && String(decoding: buf[..<got], as: UTF8.self).contains("\r\n\r\n") { break }
            if buf[..<got].contains(10) && String(decoding: buf[..<got], as: UTF8.self).contains("\n\n") { break }
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
        var bytes = Array(response.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
    }
}
