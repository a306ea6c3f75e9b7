import Foundation
import Glibc
import Synchronization
import NFQueue
@testable import Agent

/// A metrics server on 127.0.0.1 and an ephemeral port, serving on its own thread until `stop`.
final class RunningServer: Sendable {
    let server: MetricsServer
    var port: UInt16 { server.boundPort }
    private let stopping: StopFlag
    private let finished = DispatchSemaphore(value: 0)

    /// `make` builds the server from the render and stop closures (so tests can pass limits).
    init(render: @escaping @Sendable () -> String = { "test_metric 1\n" },
         make: (@escaping @Sendable () -> String, @escaping @Sendable () -> Bool) throws -> MetricsServer
             = { try MetricsServer(host: "127.0.0.1", port: 0, render: $0, shouldStop: $1) }) throws {
        let flag = StopFlag()
        stopping = flag
        server = try make(render, { flag.value.load(ordering: .relaxed) })
        let server = self.server, finished = self.finished
        Thread { server.serve(); finished.signal() }.start()
    }

    /// Asks the server to stop; true when `serve()` returned within `seconds`.
    @discardableResult
    func stop(within seconds: Double = 5) -> Bool {
        guard !stopping.value.exchange(true, ordering: .relaxed) else { return true }
        return finished.wait(timeout: .now() + seconds) == .success
    }

    /// One of the endpoint's own counts.
    func count(_ c: MetricsServerCounter) -> UInt64 { server.counters.value(c.rawValue) }

    deinit { stop() }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// One response as the tests read it.
struct Response {
    var status: Int
    var head: String
    var body: String
}

/// A loopback TCP client with every wait bounded by a deadline, so a server that does not answer
/// fails the test instead of hanging it.
final class Client {
    private(set) var fd: Int32
    private var pending: [UInt8] = []
    /// A read failed with ECONNRESET: the server reset the connection rather than closing it.
    private(set) var wasReset = false

    /// `receiveBuffer`: SO_RCVBUF set before connecting, to keep a response stuck in the server.
    convenience init(port: UInt16, receiveBuffer: Int32? = nil) throws {
        try self.init(receiveBuffer: receiveBuffer)
        try connect(port: port)
    }

    /// A socket not connected yet (`connect(port:)`): it holds its descriptor from now on.
    init(receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError("socket(test client)", errno: errno) }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    func connect(port: UInt16) throws {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { throw SystemCallError("connect(test client)", errno: errno) }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Closes with SO_LINGER 0: the kernel sends RST instead of FIN.
    func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    func shutdownWriting() { shutdown(fd, Int32(SHUT_WR)) }

    /// Sends all of `bytes`; false when the peer is gone or `seconds` passed.
    @discardableResult
    func send(_ bytes: [UInt8], within seconds: Double = 3) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var sent = 0
        while sent < bytes.count {
            guard wait(Int16(POLLOUT), until: deadline) else { return false }
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0, errno == EAGAIN || errno == EINTR { continue }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String, within seconds: Double = 3) -> Bool { send(Array(text.utf8), within: seconds) }

    /// Reads one response (head, then Content-Length bytes of body unless it answers a HEAD
    /// request); nil when the connection closed or `seconds` passed first.
    func response(within seconds: Double = 2, toHEAD: Bool = false) -> Response? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let end = headEnd(), let head = String(bytes: pending[..<end], encoding: .utf8) {
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                let bodyLength = toHEAD ? 0 : length
                if pending.count - end >= bodyLength {
                    let body = String(decoding: pending[end..<(end + bodyLength)], as: UTF8.self)
                    pending.removeFirst(end + bodyLength)
                    return Response(status: status, head: head, body: body)
                }
            }
            guard read(until: deadline) > 0 else { return nil }
        }
    }

    /// Reads until the server closes the connection (true) or `seconds` pass (false). A reset
    /// counts as closed.
    func closedByPeer(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let n = read(until: deadline)
            if n == 0 || n == -2 { return true }
            if n == -1 { return false }
        }
    }

    /// True when the server has neither closed this connection nor sent anything on it.
    var quietAndOpen: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 0
    }

    /// Bytes read (added to `pending`); 0 at end of stream, -1 at the deadline, -2 on an error.
    private func read(until deadline: Date) -> Int {
        guard wait(Int16(POLLIN), until: deadline) else { return -1 }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return read(until: deadline) }
            if errno == ECONNRESET { wasReset = true }
            return -2
        }
        pending += chunk[..<n]
        return n
    }

    private func wait(_ events: Int16, until deadline: Date) -> Bool {
        while true {
            let ms = Int32(deadline.timeIntervalSinceNow * 1000)
            guard ms > 0 else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let n = poll(&p, 1, ms)
            if n > 0 { return true }
            if n < 0, errno != EINTR { return false }
        }
    }

    private func headEnd() -> Int? {
        guard pending.count >= 4 else { return nil }
        for i in 0...(pending.count - 4) where pending[i] == 13 && pending[i + 1] == 10 && pending[i + 2] == 13 && pending[i + 3] == 10 {
            return i + 4
        }
        return nil
    }
}

extension Client {
    /// One GET /metrics on a fresh connection, closed after; nil when it did not complete within
    /// `seconds`.
    static func scrape(port: UInt16, within seconds: Double = 2) -> Response? {
        guard let c = try? Client(port: port),
              c.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", within: seconds)
        else { return nil }
        return c.response(within: seconds)
    }

    /// `count` connections that connect and send nothing.
    static func idle(_ count: Int, port: UInt16) throws -> [Client] {
        try (0..<count).map { _ in try Client(port: port) }
    }
}

/// Connections that send a request one byte every 200 ms and never finish it (slowloris), for as
/// long as the value lives.
final class Tricklers {
    let clients: [Client]
    private let done = StopFlag()
    private let finished = DispatchSemaphore(value: 0)

    init(_ count: Int, port: UInt16) throws {
        clients = try (0..<count).map { _ in try Client(port: port) }
        // Handed to the thread: nothing else touches the clients until `stop` has joined it.
        nonisolated(unsafe) let clients = self.clients
        let done = self.done, finished = self.finished
        Thread {
            let request = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 100_000)
            var i = 0
            while !done.value.load(ordering: .relaxed) {
                for c in clients where c.fd >= 0 { _ = c.send([request[i % request.count]], within: 0.05) }
                i += 1
                usleep(200_000)
            }
            finished.signal()
        }.start()
    }

    func stop() {
        guard !done.value.exchange(true, ordering: .relaxed) else { return }
        finished.wait()
    }

    deinit { stop() }
}

/// A count shared with a render closure.
final class SharedCount: Sendable {
    let value = Atomic<Int>(0)

    /// Adds one and returns the count before.
    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// Polls `condition` every 10 ms until it holds (true) or `seconds` pass (false).
func eventually(within seconds: Double = 3, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { return false }
        usleep(10_000)
    }
    return true
}

/// The value of an unlabelled sample in Prometheus text, nil when it is not there.
func sample(_ text: String, _ name: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.dropFirst(name.count + 1))
    }
    return nil
}
