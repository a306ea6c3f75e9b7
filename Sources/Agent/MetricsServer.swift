#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// What the metrics endpoint counts about its own clients. Written by the endpoint's thread only.
enum MetricsServerCounter: Int, CaseIterable {
    case accepted
    /// Connections closed to make room (idle ones, or responses their client stopped taking):
    /// the table was full, or the process had no descriptor left for the next connection.
    case evicted
    /// Connections closed because a request head or a response took too long.
    case timedOut
    /// Requests answered 200.
    case served
    /// Requests answered with an error status (400, 404, 405, 431, 505).
    case refused
    /// accept(2) calls that failed for lack of descriptors or memory (or for an undocumented
    /// reason), rather than for the pending connection's own error.
    case acceptFailures
    /// Connections open now (a gauge).
    case open
    /// Turns of the poll loop. Not exported: tests read it to see that a listener whose pending
    /// connection cannot be accepted does not make the loop spin.
    case wakeups
}

/// Prometheus's HTTP endpoint. One thread multiplexes the listener and every client with poll(2),
/// all sockets non-blocking, so a client that sends nothing or trickles holds a slot in a bounded
/// table, never the thread: a scrape is read and answered as soon as it arrives, however many slow
/// clients there are. Connections are HTTP/1.1 keep-alive (Prometheus reuses one per target);
/// HTTP/1.0 and `Connection: close` end after the response. Nothing is logged per request, and
/// nothing here touches the packet path (it only reads the workers' counters).
///
/// `@unchecked Sendable`, and why that holds: every stored property is a `let` of a Sendable
/// value (`counters` is atomics, the closures are `@Sendable`) except `scratch` and `nextSerial`,
/// which only `serve()` and the methods it calls touch, on the one thread that serves; other
/// threads read `counters`, `boundPort` and `boundAddress` only.
final class MetricsServer: @unchecked Sendable {
    struct Limits: Sendable {
        /// Connections at once; when full, the oldest idle one makes room (or, with none idle, a
        /// stalled response). Prometheus needs one per scraper; 64 leaves plenty for curl and a
        /// second scraper.
        var maxConnections = 64
        /// A request head longer than this is answered 431. Prometheus sends a few hundred bytes.
        var maxHeadBytes = 8192
        /// Time for a whole request head to arrive, counted from the accept or the previous
        /// response and never extended by a byte arriving, so trickling gains nothing. 10 s is
        /// Prometheus's default scrape timeout: a scraper that waits longer has given up.
        var headTimeout: Int64 = 10_000_000_000
        /// Time for the whole response to leave, for a client that stops reading.
        var writeTimeout: Int64 = 10_000_000_000
        /// A response whose socket took nothing for this long may be evicted when the table is
        /// full and nothing is idle: else 64 clients that ask and never read would lock scrapes
        /// out for `writeTimeout`. A scraper that reads takes a response of this agent's size
        /// (tens of KB) in milliseconds.
        var stalledWrite: Int64 = 500_000_000
        /// After the last response, how long what the client still sends is read and discarded
        /// before the close (see `finish`).
        var lingerTimeout: Int64 = 2_000_000_000
        /// How long the listener sits out when accept fails for lack of descriptors and no idle
        /// connection can be closed instead.
        var acceptPause: Int64 = 100_000_000
    }

    /// The endpoint's own figures (`MetricsServerCounter`), readable from any thread.
    let counters = CounterBlock(count: MetricsServerCounter.allCases.count)
    let boundPort: UInt16
    /// What the listener is bound to, as a client writes it: `127.0.0.1:9477`, `[::]:9477`.
    let boundAddress: String
    private let listener: Int32
    private let render: @Sendable () -> String
    private let shouldStop: @Sendable () -> Bool
    private let limits: Limits
    /// One receive buffer for every connection: only the serving thread reads into it.
    private var scratch = [UInt8](repeating: 0, count: 65536)
    private var nextSerial: UInt64 = 0

    /// How often `shouldStop` and the deadlines are looked at when nothing happens (ms).
    static let pollInterval: Int32 = 100
    /// Requests one connection may have answered per turn of the loop: a client that pipelines
    /// hundreds of small requests waits its turn behind the others instead of holding the thread.
    static let requestsPerTurn = 4

    init(host: String, port: UInt16, render: @escaping @Sendable () -> String,
         shouldStop: @escaping @Sendable () -> Bool, limits: Limits = Limits()) throws(SystemCallError) {
        self.render = render
        self.shouldStop = shouldStop
        self.limits = limits
        // Each candidate in turn (MetricsListen): "" tries the IPv6 wildcard, then IPv4's where
        // the kernel has no IPv6; a name, its addresses.
        var lastError = SystemCallError("bind(metrics \(host):\(port))", errno: EADDRNOTAVAIL)
        var bound: (fd: Int32, address: sockaddr_storage)? = nil
        for c in try MetricsListen.candidates(host: host, port: port) {
            // Non-blocking: a connection poll reported can be gone (reset) by the time accept runs,
            // and a blocking accept would then stop the whole endpoint until the next client.
            let s: Int32
            do throws(SystemCallError) {
                s = try syscallValue("socket(metrics)") {
                    socket(c.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                }
            } catch {
                lastError = error
                continue
            }
            var one: Int32 = 1
            _ = try? syscallValue("setsockopt(metrics, SO_REUSEADDR)") {
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            if c.family == AF_INET6, host.isEmpty {
                // The wildcard takes IPv4 too (v4-mapped), whatever net.ipv6.bindv6only says.
                var zero: Int32 = 0
                _ = try? syscallValue("setsockopt(metrics, IPV6_V6ONLY)") {
                    setsockopt(s, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
                }
            }
            var storage = c.storage
            let backlog = Int32(limits.maxConnections)
            do throws(SystemCallError) {
                _ = try syscallValue("bind(metrics)") {
                    withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, c.length) } }
                }
                // The backlog holds a burst of connections between two turns of the loop.
                _ = try syscallValue("listen(metrics)") { listen(s, backlog) }
            } catch {
                lastError = SystemCallError("bind/listen(metrics \(MetricsListen.describe(c.storage).text))", errno: error.errno)
                Glibc.close(s)
                // A busy port stays busy on the next candidate; only a missing family moves on.
                if lastError.errno == EADDRINUSE || lastError.errno == EACCES { break }
                continue
            }
            // Port 0 asks the kernel for one; tests read back which.
            var actual = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &actual) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
            }
            bound = (s, actual)
            break
        }
        guard let bound else { throw lastError }
        let described = MetricsListen.describe(bound.address)
        boundPort = described.port
        boundAddress = described.text
        let s = bound.fd
        listener = s
    }

    /// Serves until `shouldStop()`, then closes every connection and the listener.
    func serve() {
        var connections: [Connection] = []
        var listenerRestsUntil: Int64 = 0
        var fds: [pollfd] = []
        while !shouldStop() {
            counters.add(MetricsServerCounter.wakeups.rawValue)
            var now = monotonicNanoseconds()
            let canAccept = now >= listenerRestsUntil
                && (connections.count < limits.maxConnections || connections.contains { evictable($0, now: now) })
            fds.removeAll(keepingCapacity: true)
            // poll skips a negative descriptor: the listener sits out while no slot can be had,
            // or its pending connection would be reported again at once, every turn.
            fds.append(pollfd(fd: canAccept ? listener : -1, events: Int16(POLLIN), revents: 0))
            for c in connections {
                fds.append(pollfd(fd: c.fd, events: Int16(c.phase == .writing ? POLLOUT : POLLIN), revents: 0))
            }
            let timeout = connections.contains { $0.hasBufferedRequest } ? 0 : Self.pollInterval
            do throws(SystemCallError) {
                _ = try syscall("poll(metrics)") {
                    fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), timeout) }
                }
            } catch {
                // ENOMEM, or EINVAL once the descriptor limit is lowered below the table's size:
                // back off rather than spin; the sockets stay good.
                usleep(100_000)
                continue
            }
            now = monotonicNanoseconds()
            for (i, c) in connections.enumerated() where fds[i + 1].revents != 0 || c.hasBufferedRequest {
                service(c, now: now)
            }
            for c in connections where c.phase != .closed && now >= c.deadline {
                if c.phase != .lingering { counters.add(MetricsServerCounter.timedOut.rawValue) }
                close(c, abort: c.phase == .writing)
            }
            connections.removeAll { $0.phase == .closed }
            if fds[0].revents != 0 { listenerRestsUntil = acceptPending(&connections, now: now) }
            counters.set(MetricsServerCounter.open.rawValue, UInt64(connections.count))
        }
        for c in connections { close(c) }
        Glibc.close(listener)
    }

    // MARK: accepting

    /// Accepts what is pending, making room by evicting idle connections. Returns until when the
    /// listener sits out (0: it does not).
    private func acceptPending(_ connections: inout [Connection], now: Int64) -> Int64 {
        for _ in 0..<limits.maxConnections {
            let full = connections.count >= limits.maxConnections
            if full, !connections.contains(where: { evictable($0, now: now) }) { return 0 }
            let accepted: IOResult<Int32>
            do throws(SystemCallError) {
                // accept4 is _GNU_SOURCE-only in the Glibc module: accept, then the flags.
                accepted = try syscall("accept(metrics)") { accept(listener, nil, nil) }
            } catch {
                switch error.errno {
                case ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                    continue   // accept(2): errors of a connection that already failed; take the next
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Linux takes the descriptor before it looks at the queue, so this comes
                    // with nothing pending too: ask poll before giving up one of ours. If one
                    // is pending, poll would report it again at once: evict an idle connection
                    // for it, or let the listener rest instead of spinning.
                    guard connectionPending() else { return 0 }
                    counters.add(MetricsServerCounter.acceptFailures.rawValue)
                    if evictOldestIdle(&connections, now: now) { continue }
                    return now + limits.acceptPause
                default:
                    // Nothing documented; resting keeps an unknown persistent error from spinning.
                    counters.add(MetricsServerCounter.acceptFailures.rawValue)
                    return now + limits.acceptPause
                }
            }
            guard case .processed(let fd) = accepted else { return 0 }
            // Non-blocking, or one client could stop the loop; close-on-exec, or the programs the
            // agent runs (iptables-nft) would hold clients' connections open.
            do throws(SystemCallError) {
                let flags = try syscallValue("fcntl(metrics client, F_GETFL)") { fcntl(fd, F_GETFL) }
                _ = try syscallValue("fcntl(metrics client, O_NONBLOCK)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
                _ = try syscallValue("fcntl(metrics client, FD_CLOEXEC)") { fcntl(fd, F_SETFD, FD_CLOEXEC) }
            } catch {
                Glibc.close(fd)
                continue
            }
            counters.add(MetricsServerCounter.accepted.rawValue)
            if full { _ = evictOldestIdle(&connections, now: now) }
            let c = Connection(fd: fd, serial: nextSerial, now: now, deadline: now + limits.headTimeout)
            nextSerial &+= 1
            connections.append(c)
            service(c, now: now)   // the request usually arrived with the connection
            if c.phase == .closed { connections.removeLast() }
        }
        return 0
    }

    /// Whether the listener's queue holds a connection (poll needs no descriptor of its own).
    private func connectionPending() -> Bool {
        if case .processed? = try? pollOne(listener, timeoutMilliseconds: 0, name: "poll(metrics listener)") { return true }
        return false
    }

    /// Idle, or in a response its client has stopped taking.
    private func evictable(_ c: Connection, now: Int64) -> Bool {
        c.isIdle || (c.phase == .writing && now - c.progressed >= limits.stalledWrite)
    }

    /// Closes the idle connection that has waited longest: one done with its last response
    /// before one still waiting for a request; with none idle, the response stalled longest.
    /// Never a response that moves. False when there is nothing to evict.
    private func evictOldestIdle(_ connections: inout [Connection], now: Int64) -> Bool {
        var oldest: Int? = nil
        for (i, c) in connections.enumerated() where evictable(c, now: now) {
            if let o = oldest, connections[o].evictionOrder <= c.evictionOrder { continue }
            oldest = i
        }
        guard let i = oldest else { return false }
        close(connections[i], abort: connections[i].phase == .writing)
        connections.remove(at: i)
        counters.add(MetricsServerCounter.evicted.rawValue)
        return true
    }

    // MARK: one connection

    /// Moves a connection on as far as its socket allows now.
    private func service(_ c: Connection, now: Int64) {
        var answered = 0
        c.hasBufferedRequest = false
        while true {
            switch c.phase {
            case .readingHead:
                if let end = bufferedHead(c) {
                    guard answered < Self.requestsPerTurn else {
                        c.hasBufferedRequest = true
                        return
                    }
                    answered += 1
                    let answer = MetricsHTTP.answer(c.input[..<end], render: renderAll)
                    c.input.removeFirst(end)
                    c.scanned = 0
                    start(c, answer, now: now)
                } else if c.input.count >= limits.maxHeadBytes {
                    start(c, MetricsHTTP.headTooLarge, now: now)
                } else {
                    switch receive(c) {
                    case .data: continue
                    case .wouldBlock: return
                    case .end where c.input.isEmpty: close(c)
                    case .end:
                        // Half-closed after a head with no blank line: answer what came. The
                        // client reads on, so the response still reaches it.
                        var answer = MetricsHTTP.answer(c.input[...], render: renderAll)
                        answer.close = true
                        c.input = []
                        start(c, answer, now: now)
                    case .failed: close(c)
                    }
                }
            case .writing:
                guard flush(c, now: now) else { return }
                finish(c, now: now)
            case .lingering:
                drain(c)
                return
            case .closed:
                return
            }
        }
    }

    /// Drops empty lines before a request line, then returns where the head in `input` ends,
    /// nil while it is incomplete.
    private func bufferedHead(_ c: Connection) -> Int? {
        if c.scanned == 0 {
            let n = MetricsHTTP.leadingEmptyLines(c.input)
            if n > 0 { c.input.removeFirst(n) }
        }
        if let end = MetricsHTTP.headEnd(c.input, from: c.scanned) { return end }
        c.scanned = MetricsHTTP.resumePoint(c.input.count)
        return nil
    }

    private func start(_ c: Connection, _ answer: MetricsHTTP.Answer, now: Int64) {
        counters.add((answer.status == 200 ? MetricsServerCounter.served : .refused).rawValue)
        c.output = answer.bytes
        c.sent = 0
        c.closeAfterWrite = answer.close
        c.phase = .writing
        c.progressed = now
        c.deadline = now + limits.writeTimeout
    }

    /// Sends what the socket takes; true once the whole response left.
    private func flush(_ c: Connection, now: Int64) -> Bool {
        while c.sent < c.output.count {
            let r: IOResult<Int>
            do throws(SystemCallError) {
                r = try syscall("send(metrics)") {
                    c.output.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.sent, $0.count - c.sent, Int32(MSG_NOSIGNAL)) }
                }
            } catch {
                close(c)   // EPIPE, ECONNRESET: the client left, a reset mid-response included
                return false
            }
            guard case .processed(let n) = r else { return false }
            c.sent += n
            c.progressed = now
        }
        return true
    }

    private func finish(_ c: Connection, now: Int64) {
        c.output = []
        c.sent = 0
        c.since = now
        if c.closeAfterWrite {
            // Closing a socket with unread bytes in its receive queue makes the kernel send RST,
            // which can destroy the response before the client read it (RFC 9112 §9.6): end our
            // side, then read and discard until the client closes or the linger time ends.
            shutdown(c.fd, Int32(SHUT_WR))
            c.input = []
            c.phase = .lingering
            c.deadline = now + limits.lingerTimeout
        } else {
            c.phase = .readingHead
            c.deadline = now + limits.headTimeout
        }
    }

    private enum Received { case data, wouldBlock, end, failed }

    /// Reads more of a head into `input`, never past `maxHeadBytes`.
    private func receive(_ c: Connection) -> Received {
        let room = min(limits.maxHeadBytes - c.input.count, scratch.count)
        switch read(c, room) {
        case .wouldBlock: return .wouldBlock
        case .processed(0): return .end
        case .processed(let n):
            c.input += scratch[..<n]
            return .data
        case nil: return .failed
        }
    }

    /// Discards one buffer of what a client sends after its last response; closes at its end.
    private func drain(_ c: Connection) {
        switch read(c, scratch.count) {
        case .wouldBlock: return
        case .processed(let n) where n > 0: return
        default: close(c)
        }
    }

    /// recv into `scratch`; nil on an error (ECONNRESET and the like: nobody to answer).
    private func read(_ c: Connection, _ count: Int) -> IOResult<Int>? {
        try? syscall("recv(metrics)") {
            scratch.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress!, count, 0) }
        }
    }

    /// `abort`: for a response cut off. A plain close would leave the unsent rest to the kernel,
    /// which keeps an orphaned socket probing a client that never opens its window; SO_LINGER 0
    /// makes the close a reset that frees it at once.
    private func close(_ c: Connection, abort: Bool = false) {
        if abort {
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
        Glibc.close(c.fd)
        c.fd = -1
        c.phase = .closed
        c.input = []
        c.output = []
    }

    // MARK: text

    private func renderAll() -> String { render() + ownFigures() }

    private func ownFigures() -> String {
        func figure(_ name: String, _ type: String, _ help: String, _ c: MetricsServerCounter) -> String {
            MetricsRegistry.family(name, type, help) + "\(name) \(counters.value(c.rawValue))\n"
        }
        return figure("reflectguard_metrics_connections_accepted_total", "counter",
                      "Connections the metrics endpoint accepted.", .accepted)
            + figure("reflectguard_metrics_connections_evicted_total", "counter",
                     "Idle metrics connections closed to make room (connection cap, or no descriptor left).", .evicted)
            + figure("reflectguard_metrics_connections_timed_out_total", "counter",
                     "Metrics connections closed because a request or response took too long.", .timedOut)
            + figure("reflectguard_metrics_connections_open", "gauge", "Open metrics connections.", .open)
            + figure("reflectguard_metrics_requests_served_total", "counter", "Metrics requests answered 200.", .served)
            + figure("reflectguard_metrics_requests_refused_total", "counter",
                     "Metrics requests answered with an error status.", .refused)
            + figure("reflectguard_metrics_accept_failures_total", "counter",
                     "accept() failures for lack of descriptors or memory.", .acceptFailures)
    }
}

/// One client of the metrics endpoint and where its exchange stands.
private final class Connection {
    enum Phase {
        /// Waiting for (the rest of) a request head: idle, may be evicted.
        case readingHead
        /// A response is leaving: kept until it is out or `writeTimeout`.
        case writing
        /// The last response left; reading what the client still sends before the close: idle.
        case lingering
        case closed
    }

    var fd: Int32
    let serial: UInt64
    var phase = Phase.readingHead
    var input: [UInt8] = []
    /// Where the search for the end of the head in `input` resumes.
    var scanned = 0
    var output: [UInt8] = []
    var sent = 0
    var closeAfterWrite = false
    /// When the connection last began to wait (accept, or the end of a response).
    var since: Int64
    /// When its socket last took bytes of the response (or the response began).
    var progressed: Int64 = 0
    var deadline: Int64
    /// A complete head waits in `input` that the last turn left for the next
    /// (`MetricsServer.requestsPerTurn`).
    var hasBufferedRequest = false

    init(fd: Int32, serial: UInt64, now: Int64, deadline: Int64) {
        self.fd = fd
        self.serial = serial
        self.since = now
        self.deadline = deadline
    }

    var isIdle: Bool { (phase == .readingHead && !hasBufferedRequest) || phase == .lingering }

    /// Eviction takes the smallest: lingering, then waiting for a request (the longest waiting
    /// first), then a stalled response (the longest stalled first).
    var evictionOrder: (Int, Int64, UInt64) {
        switch phase {
        case .lingering: (0, since, serial)
        case .readingHead, .closed: (1, since, serial)
        case .writing: (2, progressed, serial)
        }
    }
}
