import Testing
import TestSupport
@testable import Agent

@Suite struct MetricsHTTPTests {
    /// Heads of non-empty lines with CR LF or bare LF endings, fed in random pieces with the
    /// search resumed where the server resumes it: the end is found exactly when the blank line
    /// is complete, at the byte after it.
    @Test func headEndResumedAcrossPiecesFindsTheBlankLine() {
        var rng = SplitMix(state: 0x6d65_7472_6963_7321)
        let lines = ["GET /metrics HTTP/1.1", "Host: 127.0.0.1:9477", "Accept: */*", "X: \r\r", "User-Agent: Prometheus/3.0"]
        for _ in 0..<2000 {
            var head: [UInt8] = []
            func end() -> [UInt8] { rng.below(2) == 0 ? [13, 10] : [10] }
            for _ in 0...rng.below(5) { head += Array(lines[rng.below(lines.count)].utf8) + end() }
            head += end()
            let trailer = Array("GET /next HTTP/1.1\r\n".utf8.prefix(rng.below(8)))
            let stream = head + trailer

            var received: [UInt8] = []
            var scanned = 0
            var found: Int? = nil
            while found == nil, received.count < stream.count {
                let n = min(1 + rng.below(6), stream.count - received.count)
                received += stream[received.count..<(received.count + n)]
                found = MetricsHTTP.headEnd(received, from: scanned)
                if found == nil {
                    #expect(received.count < head.count, "missed the end of \(String(decoding: head, as: UTF8.self).debugDescription)")
                    scanned = MetricsHTTP.resumePoint(received.count)
                }
            }
            #expect(found == head.count, "\(String(decoding: stream, as: UTF8.self).debugDescription)")
        }
    }

    @Test(arguments: [
        ("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/metrics", 1, true, false),
        ("GET /metrics?name[]=up HTTP/1.1\n\n", "GET", "/metrics", 1, true, false),
        ("GET /metrics HTTP/1.1\r\nCONNECTION: Upgrade, Close\r\n\r\n", "GET", "/metrics", 1, false, false),
        ("GET /metrics HTTP/1.0\r\n\r\n", "GET", "/metrics", 0, false, false),
        ("GET /metrics HTTP/1.0\r\nConnection:keep-alive\r\n\r\n", "GET", "/metrics", 0, true, false),
        ("HEAD http://198.18.1.1:9477/metrics HTTP/1.1\r\n\r\n", "HEAD", "/metrics", 1, true, false),
        ("GET http://198.18.1.1:9477 HTTP/1.1\r\n\r\n", "GET", "/", 1, true, false),
        ("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "POST", "/metrics", 1, true, false),
        ("POST /metrics HTTP/1.1\r\nContent-Length:  12 \r\n\r\n", "POST", "/metrics", 1, true, true),
        ("GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", "/metrics", 1, true, true),
    ])
    func requestHeadsParse(head: String, method: String, path: String, minor: Int, keepAlive: Bool, hasBody: Bool) throws {
        let r = try MetricsHTTP.parse(Array(head.utf8)[...]).get()
        #expect(r == MetricsHTTP.Request(method: Substring(method), path: Substring(path), minorVersion: minor,
                                         keepAlive: keepAlive, hasBody: hasBody))
    }

    @Test(arguments: [
        ("GET /metrics\r\n\r\n", MetricsHTTP.Malformed.badRequestLine),
        ("GET  /metrics HTTP/1.1\r\n\r\n", .badRequestLine),
        ("OPTIONS * HTTP/1.1\r\n\r\n", .badRequestLine),
        ("GET /metrics HTTP/1.1 extra\r\n\r\n", .badRequestLine),
        ("GET /metrics FTP/1.1\r\n\r\n", .badRequestLine),
        ("\u{1}\u{2}\u{3}\r\n\r\n", .badRequestLine),
        ("GET /metrics HTTP/2\r\n\r\n", .unsupportedVersion),
        ("GET /metrics HTTP/1.2\r\n\r\n", .unsupportedVersion),
    ])
    func malformedHeadsAreNamed(head: String, why: MetricsHTTP.Malformed) {
        #expect(throws: why) { try MetricsHTTP.parse(Array(head.utf8)[...]).get() }
    }

    @Test func renderIsCalledOnlyForMetrics() {
        var calls = 0
        let render = { () -> String in calls += 1; return "up 1\n" }
        for head in ["GET / HTTP/1.1\r\n\r\n", "POST /metrics HTTP/1.1\r\n\r\n", "junk\r\n\r\n"] {
            _ = MetricsHTTP.answer(Array(head.utf8)[...], render: render)
        }
        #expect(calls == 0)
        let a = MetricsHTTP.answer(Array("GET /metrics HTTP/1.1\r\n\r\n".utf8)[...], render: render)
        #expect(calls == 1)
        #expect(String(decoding: a.bytes, as: UTF8.self).hasSuffix("Content-Length: 5\r\n\r\nup 1\n"))
        #expect(!a.close)
    }
}
