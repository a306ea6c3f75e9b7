import Foundation
import Testing
import TestSupport

/// A guarded session established before the agent started, and silent since: the agent reads it
/// from the router's conntrack table at start, so a blind reset aimed at it is dropped before it
/// reaches the protected host, while the RST that really ends it passes. Real kernel TCP on both
/// ends; the protected host counts the RSTs that reach it, before its stack.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct EstablishedSeedTests {
    static let family = "rgt-seed"
    static let metricsPort = 9477

    /// The protected client: connects to the echo server on 179, has one echo, then waits for
    /// the test's steps (files `TRIGGER.1`, `.2`, …): `ping` (one echo: ALIVE or DEAD) or
    /// `wait` (RESET when the connection was reset within 3 s). It reads its own RCV.NXT from a
    /// raw socket's copies of what the server sent, so the test can aim the exact RST.
    static let client = """
        import socket, struct, sys, os, time
        host, port, trig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        raw.setblocking(False)
        s = socket.create_connection((host, port), 5)
        lport = s.getsockname()[1]
        nxt = None
        def drain():
            global nxt
            while True:
                try: p = raw.recv(4096)
                except BlockingIOError: return
                ihl = (p[0] & 15) * 4
                if socket.inet_ntoa(p[12:16]) != host: continue
                sp, dp, seq, ack, off, fl = struct.unpack('!HHIIBB', p[ihl:ihl + 14])
                if sp != port or dp != lport or fl & 4: continue
                end = (seq + len(p) - ihl - (off >> 4) * 4 + (fl & 1) + ((fl >> 1) & 1)) & 0xffffffff
                if nxt is None or ((end - nxt) & 0xffffffff) < 0x80000000: nxt = end
        def echo(msg):
            s.sendall(msg)
            d = s.recv(100)
            time.sleep(0.2)
            drain()
            return d
        echo(b'hello')
        print('PORT', lport, 'NXT', nxt, flush=True)
        step = 0
        while True:
            step += 1
            k = trig + '.' + str(step)
            while not os.path.exists(k): time.sleep(0.05)
            cmd = open(k).read().strip()
            if cmd == 'ping':
                try:
                    echo(b'ping')
                    print('ALIVE', step, 'NXT', nxt, flush=True)
                except Exception as e:
                    print('DEAD', step, e, flush=True)
            else:
                s.settimeout(3)
                try:
                    d = s.recv(100)
                    print('NORESET', step, d, flush=True)
                except ConnectionResetError:
                    print('RESET', step, flush=True)
                except Exception as e:
                    print('NORESET', step, e, flush=True)
                sys.exit(0)
        """

    struct Outcome {
        var seeded: Int
        /// Forged RSTs that reached the protected host after (a), and whether the session
        /// answered the ping after it.
        var blindArrived: Int, aliveAfterBlind: Bool
        /// After the ping taught the window: a second blind RST's arrivals.
        var secondBlindArrived: Int
        /// (b): the exact RST arrived and reset the connection.
        var exactArrived: Int, reset: Bool
        var reasons: [String: Double]
        var log: String
    }

    static func run() throws -> Outcome {
        let lab = try LabNet("seed", family: family)
        defer { lab.tearDown() }
        // What reaches the protected host from the server's port 179, before its stack.
        let counters = """
            table inet rgseed {
              counter blind {}
              chain pre {
                type filter hook prerouting priority -400; policy accept;
                ip saddr 198.18.1.2 tcp sport 179 tcp flags & rst == rst counter name "blind"
              }
            }
            """
        let f = lab.tempPath("rgseed.nft")
        try counters.write(toFile: f, atomically: true, encoding: .utf8)
        try lab.exec(lab.protected, "nft -f \(f)")
        // The router tracks connections, as routers with a stateful firewall do: any ct
        // expression turns conntrack on in a network namespace.
        let firewall = lab.tempPath("rgseedfw.nft")
        try """
            table inet rgseedfw {
              chain through {
                type filter hook forward priority 0; policy accept;
                ct state established counter
              }
            }
            """.write(toFile: firewall, atomically: true, encoding: .utf8)
        try lab.exec(lab.router, "nft -f \(firewall)")
        func blind() throws -> Int {
            let r = try lab.exec(lab.protected, "nft list counter inet rgseed blind")
            guard let m = r.stdout.firstMatch(of: #/packets (\d+)/#), let n = Int(m.1) else { throw HarnessError(r.stdout) }
            return n
        }

        let server = lab.tempPath("echo.py"), clientFile = lab.tempPath("client.py"), sweepFile = lab.tempPath("sweep.py")
        try RSTInlineTests.echoServer.write(toFile: server, atomically: true, encoding: .utf8)
        try client.write(toFile: clientFile, atomically: true, encoding: .utf8)
        try RSTInlineTests.sweeper.write(toFile: sweepFile, atomically: true, encoding: .utf8)
        _ = try lab.spawn(lab.inet, ["python3", server])
        // A loaded machine starts python slowly: the client must not find the port closed.
        for _ in 0..<100 where try lab.exec(lab.inet, "ss -Hltn 'sport = :179'").stdout.isEmpty { usleep(100_000) }

        // The session starts with no agent, then goes quiet.
        let trigger = lab.tempPath("trigger"), out = lab.tempPath("client.out"), err = lab.tempPath("client.err")
        _ = try lab.spawn(lab.protected, ["python3", clientFile, "198.18.1.2", "179", trigger], stderrFile: err, stdoutFile: out)
        func output() -> String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }
        /// The client's last line starting with one of `prefixes`, waiting up to 30 s for it.
        func line(_ prefixes: String...) throws -> String {
            for _ in 0..<300 {
                let lines = output().split(separator: "\n")
                if let l = lines.last(where: { l in prefixes.contains { l.hasPrefix($0) } }) { return String(l) }
                usleep(100_000)
            }
            let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
            throw HarnessError("the client printed none of \(prefixes): \(output()) \(stderr)")
        }
        var steps: [String] = []
        defer { for s in steps { unlink(s) } }
        func command(_ c: String) throws {
            let path = "\(trigger).\(steps.count + 1)"
            steps.append(path)
            try c.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let first = try line("PORT")
        guard let m = first.firstMatch(of: #/PORT (\d+) NXT (\d+)/#), let port = Int(m.1), let nxt = UInt32(m.2) else {
            throw HarnessError("client: \(output())")
        }
        func send(_ seq: UInt32) throws {
            try lab.exec(lab.inet, "python3 \(sweepFile) 198.18.1.2 198.18.2.2 \(port) \(seq)")
            // Judged and delivered (or not) once the host's count stops moving, not after a fixed
            // 300 ms: the exact RST must be counted when it arrives late on a loaded machine.
            _ = try settled { try blind() }
        }

        let agent = try AgentProcess(lab, RSTInlineTests.protect + InlineAgentTests.agentOnly
                                     + ["--metrics", "\(metricsPort)", "-D", "track_full_ports={ 179 }"])
        let seeded = Int(agent.log.firstMatch(of: #/"event":"ct-seed"[^\n]*"seeded":(\d+)/#)?.1 ?? "0") ?? 0

        // (a) A blind reset far outside the window, before the session has sent anything.
        try send(nxt &+ 0x8000_0000)
        let blindArrived = try blind()
        try command("ping")
        let afterPing = try line("ALIVE", "DEAD")
        // The ping taught the window: the same guess is judged against it now.
        try send(nxt &+ 0x8000_0000)
        let second = try blind() - blindArrived
        // (b) The RST that ends the session: exact, at the client's RCV.NXT.
        guard let n2 = afterPing.firstMatch(of: #/NXT (\d+)/#), let exact = UInt32(n2.1) else { throw HarnessError(output()) }
        let before = try blind()
        try send(exact)
        let exactArrived = try blind() - before
        try command("wait")
        let reset = try line("RESET", "NORESET").hasPrefix("RESET")
        let metrics = try agent.metrics(port: metricsPort)
        var reasons: [String: Double] = [:]
        for line in metrics.split(separator: "\n") where line.hasPrefix("reflectguard_packets_total{") {
            guard let r = line.firstMatch(of: #/verdict="(\w+)",reason="([\w-]+)"\} (\d+)/#) else { continue }
            reasons["\(r.1) \(r.2)", default: 0] += Double(r.3) ?? 0
        }
        #expect(agent.stop() == 0)
        return Outcome(seeded: seeded, blindArrived: blindArrived, aliveAfterBlind: afterPing.hasPrefix("ALIVE"), secondBlindArrived: second,
                       exactArrived: exactArrived, reset: reset, reasons: reasons, log: agent.log)
    }

    @Test func blindResetOnASessionOlderThanTheAgentIsDropped() throws {
        try Env.requireReady()
        let o = try Self.run()
        measured("guarded session older than the agent (-D track_full_ports={ 179 }): seeded \(o.seeded); blind RST far out of "
                 + "window before it sent: \(o.blindArrived) reached the host, session \(o.aliveAfterBlind ? "alive" : "dead"); "
                 + "after its ping: \(o.secondBlindArrived) reached; exact RST: \(o.exactArrived) reached, reset \(o.reset); "
                 + "reasons \(o.reasons.sorted { $0.key < $1.key })")
        #expect(o.seeded >= 1, "nothing seeded: \(o.log)")
        #expect(o.blindArrived == 0, "the blind reset reached the protected host: \(o.reasons) \(o.log)")
        #expect(o.reasons["drop rst-unverified"] == 1)
        #expect(o.aliveAfterBlind)
        #expect(o.secondBlindArrived == 0)
        #expect(o.reasons["drop rst-out-of-window"] == 1)
        #expect(o.exactArrived == 1 && o.reset, "the session's real end did not pass: \(o.reasons)")
        #expect(o.reasons["accept rst-exact"] == 1)
    }
}
