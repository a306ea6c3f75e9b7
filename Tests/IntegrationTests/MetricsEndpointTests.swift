import Foundation
import Testing
import TestSupport

/// The running agent's metrics endpoint against many slow clients, in the router namespace.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct MetricsEndpointTests {
    /// 40 connections that send nothing and 10 that send a request one byte every 200 ms, then
    /// three scrapes, each with 3 s to connect and 3 s per read (Prometheus allows 10 s in all).
    /// Served one client at a time with a second each, the scrapes would wait about 50 s.
    static let slowClients = """
        import socket, sys, threading, time
        port = int(sys.argv[1])
        idle = [socket.create_connection(('127.0.0.1', port), 3) for _ in range(40)]
        tricklers = [socket.create_connection(('127.0.0.1', port), 3) for _ in range(10)]
        head = b'GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Slow: ' + b'x' * 4000
        def trickle():
            for i in range(len(head)):
                for t in tricklers:
                    try: t.send(head[i:i + 1])
                    except OSError: pass
                time.sleep(0.2)
        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(0.6)
        for n in range(3):
            t0 = time.monotonic()
            text = b''
            try:
                s = socket.create_connection(('127.0.0.1', port), 3)
                s.settimeout(3)
                s.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n')
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    text += chunk
            except OSError as e:
                print('scrape', n, 'failed:', e, file=sys.stderr)
            took = time.monotonic() - t0
            ok = text.startswith(b'HTTP/1.1 200') and b'reflectguard_packets_received_total' in text
            opened = [l for l in text.split(b'\\n') if l.startswith(b'reflectguard_metrics_connections_open ')]
            print('SCRAPE', int(ok), '%.3f' % took, opened[0].split()[1].decode() if opened else '-', flush=True)
        """

    @Test func scrapesAreAnsweredWhileFiftySlowClientsHoldConnections() throws {
        try Env.requireReady()
        let lab = try LabNet("slow", family: "rgt-metrics")
        defer { lab.tearDown() }
        let agent = try AgentProcess(lab, InlineAgentTests.protect + InlineAgentTests.agentOnly + InlineAgentTests.metrics)
        let script = lab.tempPath("slow-clients.py")
        try Self.slowClients.write(toFile: script, atomically: true, encoding: .utf8)
        let r = try lab.exec(lab.router, "timeout 60 python3 \(script) \(InlineAgentTests.metricsPort)", check: false)
        let scrapes = r.stdout.split(separator: "\n").filter { $0.hasPrefix("SCRAPE ") }.map { $0.split(separator: " ") }
        #expect(scrapes.count == 3, "\(r.stdout) \(r.stderr)")
        for s in scrapes where s.count == 4 {
            measured("scrape behind 50 slow metrics clients: \(s[2]) s")
            #expect(s[1] == "1", "a scrape was not answered in time: \(r.stderr)")
            // The slow clients were held, not turned away, while the scrapes went through.
            #expect((Int(s[3]) ?? 0) >= 50, "open metrics connections: \(s[3])")
        }
        #expect(agent.stop() == 0)
    }
}
