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
        #expect(s.count(.timedOut) == 5)
        #expect(Client.scrape(port: s.port)?.status == 200)
    }

    @Test func anIdleKeptAliveConnectionIsClosedAtTheHeadTimeout() throws {
        // A 4 s timeout, the request at 2 s and the check 2.5 s after the response: past the
        // accept's deadline, and 1.5 s short of the response's, so a sleep overrun by a loaded
        // machine (up to 1.5 s) cannot turn either side.
        let s = try Self.server(headTimeout: 4_000_000_000)
        let c = try Client(port: s.port)
        usleep(2_000_000)
        c.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(c.response()?.status == 200)
        usleep(2_500_000)
        #expect(c.quietAndOpen, "past the accept's deadline: the next request's is counted from the response")
        #expect(c.closedByPeer(within: 6))
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
        try #require(eventually { renders.value.load(ordering: .relaxed) == 1 }, "the response is under way")
        let idle = try Client.idle(cap, port: s.port)   // the last one evicts the oldest idle
        try #require(eventually(within: 10) { s.count(.accepted) == UInt64(cap + 1) }, "accepted \(s.count(.accepted)) of \(cap + 1)")
        #expect(Client.scrape(port: s.port)?.status == 200)   // and this the next
        #expect(idle[0].closedByPeer(within: 2) && idle[1].closedByPeer(within: 2))
        #expect(idle.dropFirst(2).allSatisfy { $0.quietAndOpen })
        let r = try #require(slow.response(within: 10), "the slow client's response was cut")
        #expect(r.status == 200 && r.body.hasPrefix(big) && r.body.utf8.count > big.utf8.count, "the whole text, then the endpoint's figures")
        #expect(s.count(.evicted) == 2)
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
        try #require(eventually { renders.value.load(ordering: .relaxed) == 8 }, "every reader has its response under way")

        let r = try #require(Client.scrape(port: s.port, within: 3), "no scrape while slow readers hold every slot")
        #expect(r.body.hasPrefix("small 1\n"))
        #expect(s.count(.evicted) == 1)
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
        // Polled with a wide deadline (the timeout is 1 s), not slept on.
        #expect(eventually(within: 10) { s.count(.timedOut) == 1 && s.count(.open) == 0 },
                "timed out \(s.count(.timedOut)), open \(s.count(.open))")
        #expect(slow.closedByPeer(within: 3) && slow.wasReset, "reset, so the kernel drops the unsent rest")
    }

    /// Out of descriptors with idle connections open: the oldest idle one gives its descriptor to
    /// the scrape. In a child process, as the descriptor limit is the whole process's.
    @Test func outOfDescriptorsAnIdleConnectionMakesRoomForTheScrape() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let s = try RunningServer()
            let scraper = try Client()
            let idle = try Client.idle(20, port: s.port)
            check(eventually { s.count(.accepted) == 20 }, "accepted \(s.count(.accepted)) of 20")
            _ = try exhaustDescriptors()
            try scraper.connect(port: s.port)
            scraper.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            let r = scraper.response(within: 2)
            check(r?.status == 200, "scrape with no descriptor left: \(String(describing: r)), \(s.count(.acceptFailures)) accept failures")
            check(s.count(.acceptFailures) > 0, "accept never failed: a descriptor was left")
            check(s.count(.evicted) == 1, "\(s.count(.evicted)) evicted for one scrape")
            check(idle[0].closedByPeer(within: 1), "the oldest idle connection gave its descriptor")
        }
        reportChild(result)
    }

    /// Out of descriptors with nothing to evict: the pending connection is reported ready every
    /// time, and the loop must rest instead of spinning on it, then accept once one is free.
    @Test func outOfDescriptorsWithNothingToEvictTheListenerRests() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let s = try RunningServer()
            let client = try Client()
            var held = try exhaustDescriptors()
            try client.connect(port: s.port)
            usleep(200_000)
            let before = s.count(.wakeups)
            usleep(1_000_000)
            let turns = s.count(.wakeups) - before
            // About 20 a second (the poll interval and the pause); a spinning loop makes millions.
            check(turns < 100, "\(turns) turns of the loop in a second")
            check(s.count(.acceptFailures) > 0, "accept never failed")
            close(held.removeLast())
            client.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            check(client.response(within: 2)?.status == 200,
                  "no answer once a descriptor was free: \(MetricsServerCounter.allCases.map { "\($0) \(s.count($0))" })")
        }
        reportChild(result)
    }
}

/// Lowers the soft descriptor limit to just above the highest open descriptor and fills the
/// holes below it with /dev/null, so that nothing is left; returns those it opened.
private func exhaustDescriptors() throws -> [Int32] {
    var highest: Int32 = 0
    for fd in 0..<Int32(4096) where fcntl(fd, F_GETFD) >= 0 { highest = fd }
    var l = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &l)
    l.rlim_cur = rlim_t(highest + 2)
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &l) == 0 else { throw POSIXError(.EINVAL) }
    var held: [Int32] = []
    while true {
        let fd = open("/dev/null", O_RDONLY)
        if fd < 0 { return held }
        held.append(fd)
    }
}

/// The child's failed checks. The child ends with success after one (`check`): the result, and
/// with it the child's output, comes back only from an exit test that met its condition.
private func reportChild(_ result: ExitTest.Result?, sourceLocation: SourceLocation = #_sourceLocation) {
    let output = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self)
    #expect(!output.contains("check failed"), "\(output)", sourceLocation: sourceLocation)
}

/// In an exit test: a failed condition ends the child, with a line for `reportChild`. Standard
/// output is already open: it needs no descriptor, which the child may have none of.
private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        print("check failed: \(message())")
        fflush(nil)   // every stream: stdout itself is a global Swift 6 will not read from here
        exit(EXIT_SUCCESS)
    }
}
