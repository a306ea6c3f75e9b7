import Foundation
import Glibc
import Testing
@testable import Agent

/// The endpoint's bounds: deadlines, the connection cap against a response in progress, and
/// running out of descriptors.
@Suite struct MetricsServerLimitsTests {
    static func server(headTimeout: Int64) throws -> RunningServer {
        var limits = MetricsServer.Limits()
        limits.headTimeout = headTimeout
        return try RunningServer(make: { try MetricsServer(host: "127.0.0.1", port: 0, render: $0, shouldStop: $1, limits: limits) })
    }

    @Test func tricklingAndSilentClientsAreDroppedAtTheHeadTimeout() throws {
        let s = try Self.server(headTimeout: 1_000_000_000)
        let tricklers = try Tricklers(3, port: s.port)
        let idle = try Client.idle(2, port: s.port)
        // The tricklers keep sending: a byte must not move the deadline.
        for c in tricklers.clients + idle { #expect(c.closedByPeer(within: 4)) }
        tricklers.stop()
        #expect(s.server.counters.value(MetricsServerCounter.timedOut.rawValue) == 5)
        #expect(Client.scrape(port: s.port)?.status == 200)
    }

    @Test func anIdleKeptAliveConnectionIsClosedAtTheHeadTimeout() throws {
        let s = try Self.server(headTimeout: 1_000_000_000)
        let c = try Client(port: s.port)
        usleep(600_000)
        c.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(c.response()?.status == 200)
        #expect(c.quietAndOpen, "a new second for the next request, counted from the response")
        #expect(c.closedByPeer(within: 3))
    }

    @Test func aConnectionInTheMiddleOfAResponseIsNotEvicted() throws {
        // 17 MB: more than the server's socket buffer can grow to (tcp_wmem's 4 MiB by default)
        // with a 4 KiB receive buffer on the client, so the response stays in progress.
        let big = String(repeating: "big_metric 1\n", count: 1_300_000)
        let renders = SharedCount()
        let s = try RunningServer(render: { renders.next() == 0 ? big : "small 1\n" })
        let cap = MetricsServer.Limits().maxConnections
        let slow = try Client(port: s.port, receiveBuffer: 4096)
        slow.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        usleep(300_000)
        let idle = try Client.idle(cap, port: s.port)   // the last one evicts the oldest idle
        usleep(300_000)
        #expect(Client.scrape(port: s.port)?.status == 200)   // and this the next
        #expect(idle[0].closedByPeer(within: 2) && idle[1].closedByPeer(within: 2))
        #expect(idle.dropFirst(2).allSatisfy { $0.quietAndOpen })
        let r = try #require(slow.response(within: 10), "the slow client's response was cut")
        #expect(r.status == 200 && r.body.hasPrefix(big) && r.body.utf8.count > big.utf8.count, "the whole text, then the endpoint's figures")
        #expect(s.server.counters.value(MetricsServerCounter.evicted.rawValue) == 2)
    }

    /// Clients that ask and never read fill the table: with nothing idle, the response stalled
    /// longest makes room (with a reset, so the kernel does not keep the rest of it).
    @Test func slowReadersFillingTheTableGiveWayToAScrape() throws {
        var limits = MetricsServer.Limits()
        limits.maxConnections = 8
        let big = String(repeating: "big_metric 1\n", count: 500_000)   // 6.5 MB, past the socket buffers
        let renders = SharedCount()
        let s = try RunningServer(render: { renders.next() < 8 ? big : "small 1\n" }, make: {
            try MetricsServer(host: "127.0.0.1", port: 0, render: $0, shouldStop: $1, limits: limits)
        })
        let readers = try (0..<8).map { _ in try Client(port: s.port, receiveBuffer: 4096) }
        for r in readers { r.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n") }
        usleep(300_000)
        #expect(renders.value.load(ordering: .relaxed) == 8, "every reader has its response under way")

        let r = try #require(Client.scrape(port: s.port, within: 3), "no scrape while slow readers hold every slot")
        #expect(r.body.hasPrefix("small 1\n"))
        #expect(s.server.counters.value(MetricsServerCounter.evicted.rawValue) == 1)
        let responses = readers.map { $0.response(within: 3) }
        #expect(responses.filter { $0 == nil }.count == 1, "one response cut off")
        // A plain close would leave the kernel sending what it buffered (megabytes) to a client
        // that may never read it.
        #expect(readers.filter { $0.wasReset }.count == 1, "and reset")
        #expect(responses.compactMap { $0 }.allSatisfy { $0.body.hasPrefix(big) }, "the others arrive whole")
    }

    @Test func aClientThatStopsReadingIsDroppedAtTheWriteTimeout() throws {
        var limits = MetricsServer.Limits()
        limits.writeTimeout = 1_000_000_000
        let big = String(repeating: "big_metric 1\n", count: 1_300_000)
        let s = try RunningServer(render: { big }) {
            try MetricsServer(host: "127.0.0.1", port: 0, render: $0, shouldStop: $1, limits: limits)
        }
        let slow = try Client(port: s.port, receiveBuffer: 4096)
        slow.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        usleep(2_500_000)
        #expect(s.server.counters.value(MetricsServerCounter.timedOut.rawValue) == 1)
        #expect(s.server.counters.value(MetricsServerCounter.open.rawValue) == 0)
        #expect(slow.closedByPeer(within: 3) && slow.wasReset, "reset, so the kernel drops the unsent rest")
    }

    /// Out of descriptors with idle connections open: the oldest idle one gives its descriptor to
    /// the scrape. In a child process, as the descriptor limit is the whole process's.
    @Test func outOfDescriptorsAnIdleConnectionMakesRoomForTheScrape() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let s = try RunningServer()
            let scraper = try Client()
            try limitDescriptors(free: 40)
            var idle: [Client] = []
            while idle.count < 1000, let c = try? Client(port: s.port) { idle.append(c) }
            usleep(300_000)
            try scraper.connect(port: s.port)
            scraper.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            let r = scraper.response(within: 2)
            check(r?.status == 200, "scrape with no descriptor left: \(String(describing: r))")
            check(s.server.counters.value(MetricsServerCounter.acceptFailures.rawValue) > 0, "accept never failed")
            check(s.server.counters.value(MetricsServerCounter.evicted.rawValue) > 0, "nothing evicted")
        }
        reportChild(result)
    }

    /// Out of descriptors with nothing to evict: the pending connection is reported ready every
    /// time, and the loop must rest instead of spinning on it, then accept once one is free.
    @Test func outOfDescriptorsWithNothingToEvictTheListenerRests() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let s = try RunningServer()
            let client = try Client()
            try limitDescriptors(free: 3)
            var held: [Int32] = []
            while true {
                let fd = open("/dev/null", O_RDONLY)
                if fd < 0 { break }
                held.append(fd)
            }
            try client.connect(port: s.port)
            usleep(200_000)
            let before = s.server.counters.value(MetricsServerCounter.wakeups.rawValue)
            usleep(1_000_000)
            let turns = s.server.counters.value(MetricsServerCounter.wakeups.rawValue) - before
            // About 20 a second (the poll interval and the pause); a spinning loop makes millions.
            check(turns < 100, "\(turns) turns of the loop in a second")
            check(s.server.counters.value(MetricsServerCounter.acceptFailures.rawValue) > 0, "accept never failed")
            close(held.removeLast())
            client.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            check(client.response(within: 2)?.status == 200, "no answer once a descriptor was free")
        }
        reportChild(result)
    }
}

/// Lowers the soft descriptor limit to leave `free` descriptors above the highest open one.
private func limitDescriptors(free: Int) throws {
    var highest: Int32 = 0
    for fd in 0..<Int32(4096) where fcntl(fd, F_GETFD) >= 0 { highest = fd }
    var l = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &l)
    l.rlim_cur = rlim_t(Int(highest) + 1 + free)
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &l) == 0 else { throw POSIXError(.EINVAL) }
}

/// The child's complaint, when it failed.
private func reportChild(_ result: ExitTest.Result?, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let result, result.exitStatus != .exitCode(EXIT_SUCCESS) else { return }
    Issue.record("child: \(String(decoding: result.standardErrorContent, as: UTF8.self))", sourceLocation: sourceLocation)
}

/// In an exit test: a failed condition ends the child with a message.
private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        fputs("check failed: \(message())\n", stderr)
        exit(1)
    }
}
