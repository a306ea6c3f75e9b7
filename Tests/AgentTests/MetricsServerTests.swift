import Foundation
import Testing
@testable import Agent

/// The metrics endpoint against clients that are slow, silent, oversized or rude, on loopback.
/// Deadlines are behavioural with wide margins: Prometheus gives a scrape 10 s by default, and a
/// server that serves one client at a time needs a second per slow client ahead of the scrape.
@Suite struct MetricsServerTests {
    @Test func scrapeIsAnsweredWhileSlowClientsHoldConnections() throws {
        let s = try RunningServer()
        let idle = try Client.idle(40, port: s.port)
        let tricklers = try Tricklers(10, port: s.port)
        usleep(500_000)   // the tricklers have sent a few bytes each

        let r = try #require(Client.scrape(port: s.port, within: 2), "no scrape within 2 s behind 50 slow clients")
        #expect(r.status == 200)
        #expect(r.body.hasPrefix("test_metric 1\n"))
        #expect(idle.allSatisfy { $0.quietAndOpen }, "idle connections below the cap stay open")
        tricklers.stop()
    }

    @Test func moreSlowClientsThanTheCapStillLetAScrapeThrough() throws {
        let s = try RunningServer()
        let idle = try Client.idle(150, port: s.port)
        let r = try #require(Client.scrape(port: s.port, within: 2), "no scrape within 2 s behind 150 idle clients")
        #expect(r.status == 200)
        let evicted = try #require(sample(r.body, "reflectguard_metrics_connections_evicted_total"))
        #expect(evicted >= Double(150 + 1 - MetricsServer.Limits().maxConnections))
        #expect(idle.filter { $0.quietAndOpen }.count <= MetricsServer.Limits().maxConnections)
    }

    @Test func aFullTableEvictsTheOldestIdleConnection() throws {
        let s = try RunningServer()
        let cap = MetricsServer.Limits().maxConnections
        let idle = try Client.idle(cap, port: s.port)
        // All accepted, in connection order (polled: a sleep can be outlasted on a loaded machine).
        try #require(eventually(within: 10) { s.count(.accepted) == UInt64(cap) }, "accepted \(s.count(.accepted)) of \(cap)")

        let r = try #require(Client.scrape(port: s.port, within: 2))
        #expect(r.status == 200)
        #expect(sample(r.body, "reflectguard_metrics_connections_evicted_total") == 1)
        #expect(idle[0].closedByPeer(within: 2), "the oldest idle connection made room")
        #expect(idle.dropFirst().allSatisfy { $0.quietAndOpen }, "only the oldest went")
    }

    @Test func anOversizedRequestHeadIsRefused() throws {
        let s = try RunningServer()
        let c = try Client(port: s.port)
        let big = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + String(repeating: "a", count: 100 * 1024) + "\r\n\r\n"
        c.send(big)
        let r = try #require(c.response(within: 2))
        #expect(r.status == 431)
        #expect(c.closedByPeer(within: 3))
        #expect(Client.scrape(port: s.port)?.status == 200, "the server still serves")
    }

    @Test func keepAliveAnswersPipelinedRequestsInOrder() throws {
        let s = try RunningServer()
        let c = try Client(port: s.port)
        c.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /nothing HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(c.response()?.status == 200)
        #expect(c.response()?.status == 404)
        #expect(c.response()?.status == 200)
        #expect(c.quietAndOpen, "HTTP/1.1 keeps the connection")
        c.send("GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let last = try #require(c.response())
        #expect(last.head.contains("Connection: close"))
        #expect(c.closedByPeer(within: 3))
    }

    @Test func http10ClosesAfterTheResponseUnlessAskedToKeepAlive() throws {
        let s = try RunningServer()
        let once = try Client(port: s.port)
        once.send("GET /metrics HTTP/1.0\r\n\r\n")
        #expect(once.response()?.status == 200)
        #expect(once.closedByPeer(within: 3))

        let kept = try Client(port: s.port)
        kept.send("GET /metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(kept.response()?.head.contains("Connection: keep-alive") == true)
        kept.send("HEAD /metrics HTTP/1.0\r\n\r\n")
        let head = try #require(kept.response(toHEAD: true))
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(kept.closedByPeer(within: 3))
    }

    @Test(arguments: [
        ("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405),
        ("GET /metrics\r\n\r\n", 400),
        ("GET /metrics HTTP/2.0\r\n\r\n", 505),
        ("garbage\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 404),
    ])
    func badRequestsGetAStatusAndTheServerGoesOn(request: String, status: Int) throws {
        let s = try RunningServer()
        let c = try Client(port: s.port)
        c.send(request)
        #expect(c.response()?.status == status)
        #expect(Client.scrape(port: s.port)?.status == 200)
    }

    @Test func aClientThatHalfClosesIsStillAnswered() throws {
        let s = try RunningServer()
        let full = try Client(port: s.port)
        full.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        full.shutdownWriting()
        #expect(full.response()?.status == 200)
        #expect(full.closedByPeer(within: 3))

        // No blank line before the end of the stream: the request line is all there is.
        let cut = try Client(port: s.port)
        cut.send("GET /metrics HTTP/1.0\r\n")
        cut.shutdownWriting()
        #expect(cut.response()?.status == 200)
        #expect(cut.closedByPeer(within: 3))

        let silent = try Client(port: s.port)
        silent.shutdownWriting()
        #expect(silent.closedByPeer(within: 3))
    }

    @Test func aResetInTheMiddleOfAResponseLeavesTheServerServing() throws {
        let body = String(repeating: "big_metric 1\n", count: 400_000)   // 5 MB: more than the socket buffers
        let s = try RunningServer(render: { body })
        for _ in 0..<3 {
            let c = try Client(port: s.port, receiveBuffer: 4096)
            c.send("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            usleep(100_000)
            c.reset()
        }
        let r = try #require(Client.scrape(port: s.port, within: 5))
        #expect(r.status == 200 && r.body.utf8.count >= body.utf8.count)
    }

    @Test func stopClosesEverythingWithinASecond() throws {
        let s = try RunningServer()
        let idle = try Client.idle(40, port: s.port)
        let tricklers = try Tricklers(10, port: s.port)
        usleep(300_000)
        let started = Date()
        #expect(s.stop(within: 5))
        #expect(Date().timeIntervalSince(started) < 1, "serve() returned \(Date().timeIntervalSince(started)) s after the stop")
        tricklers.stop()
        #expect((idle + tricklers.clients).allSatisfy { $0.closedByPeer(within: 1) })
        #expect((try? Client(port: s.port)) == nil, "nothing listens any more")
    }
}
