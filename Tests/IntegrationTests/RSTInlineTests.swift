import Foundation
import Testing
import TestSupport

/// The RST half inline: a spoofed RST flood spread over the protected /24 is cut while the
/// protected host's real connections that end in a RST end exactly as without the agent, and a
/// long-lived session on a guarded port survives a blind-reset sweep that kills it without the
/// agent. Each case runs with and without the agent in its own lab; the RSTs that reached the
/// protected host are counted there, before its stack. Serialized: floods share the cores.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct RSTInlineTests {
    static let family = "rgt-rst"
    static let protect = ["--protect", "198.18.2.0/24", "--protect", "2001:db8:2::/64"]

    /// The protected host answers on every address of its /24 (so the spread flood's packets are
    /// delivered and counted), and counts the RSTs it gets per kind.
    static func prepare(_ lab: LabNet) throws {
        let batch = lab.tempPath("addrs")
        try (3...254).map { "addr add 198.18.2.\($0)/32 dev p0" }.joined(separator: "\n")
            .write(toFile: batch, atomically: true, encoding: .utf8)
        try lab.exec(lab.protected, "ip -batch \(batch)")
        let rules = """
            table inet rgrst {
              counter refused {}
              counter aborted {}
              counter blind {}
              chain pre {
                type filter hook prerouting priority -400; policy accept;
                ip saddr 198.18.1.2 tcp sport 9 tcp flags & rst == rst counter name "refused"
                ip saddr 198.18.1.2 tcp sport 7001 tcp flags & rst == rst counter name "aborted"
                ip saddr 198.18.1.2 tcp sport 179 tcp flags & rst == rst counter name "blind"
              }
              # The RFC 793 peer speaks TCP from a raw socket: the kernel, which has no socket for
              # it, must not reset its session.
              chain out {
                type filter hook output priority 0; policy accept;
                tcp dport 179 tcp flags & rst == rst drop
              }
            }
            """
        let f = lab.tempPath("rgrst.nft")
        try rules.write(toFile: f, atomically: true, encoding: .utf8)
        try lab.exec(lab.protected, "nft -f \(f)")
    }

    static func count(_ lab: LabNet, _ name: String) throws -> Int {
        let r = try lab.exec(lab.protected, "nft list counter inet rgrst \(name)")
        guard let m = r.stdout.firstMatch(of: #/packets (\d+)/#), let n = Int(m.1) else { throw HarnessError(r.stdout) }
        return n
    }

    /// Each round: a connection to a closed port (the server's stack refuses with RST|ACK) and
    /// one to a server that aborts (SO_LINGER 0: RST at once). What the client saw, per round.
    static let endingsClient = """
        import socket, sys
        host, n = sys.argv[1], int(sys.argv[2])
        wait = float(sys.argv[3]) if len(sys.argv) > 3 else 5
        refused = reset = 0
        for i in range(n):
            s = socket.socket()
            s.settimeout(wait)
            try:
                s.connect((host, 9))
            except ConnectionRefusedError:
                refused += 1
            except Exception as e:
                print('refusal', i, e, file=sys.stderr)
            s.close()
            s = socket.socket()
            s.settimeout(wait)
            try:
                s.connect((host, 7001))
                s.sendall(b'x')
                s.recv(10)
                print('abort', i, 'no reset', file=sys.stderr)
            except ConnectionResetError:
                reset += 1
            except Exception as e:
                print('abort', i, e, file=sys.stderr)
            s.close()
        print('RESULT', refused, reset, n)
        """

    static let abortServer = """
        import socket, struct
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(('0.0.0.0', 7001))
        l.listen(64)
        while True:
            c, _ = l.accept()
            c.recv(10)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            c.close()
        """

    struct Endings: Equatable { var refused: Int, reset: Int, rounds: Int, refusedRSTs: Int, abortRSTs: Int }

    /// Real connections that end in a RST during a spread RST flood; with or without the agent.
    static func endingsUnderFlood(agent withAgent: Bool) throws -> (Endings, floodArrived: Int, floodSent: Int) {
        let lab = try LabNet(withAgent ? "end" : "end0", family: family)
        defer { lab.tearDown() }
        try prepare(lab)
        let server = lab.tempPath("abort.py"), client = lab.tempPath("endings.py")
        try abortServer.write(toFile: server, atomically: true, encoding: .utf8)
        try endingsClient.write(toFile: client, atomically: true, encoding: .utf8)
        _ = try lab.spawn(lab.inet, ["python3", server])
        usleep(300_000)
        var agent: AgentProcess?
        if withAgent { agent = try AgentProcess(lab, protect + InlineAgentTests.agentOnly) }
        try lab.resetCounters()
        // 4,000 a second for 15 s, spread over the /24; the connections start a second in.
        let sent = 60_000
        let flood = try lab.flood(.rstSpread, count: sent, gap: "250us", background: true)!
        usleep(1_000_000)
        let r = try lab.exec(lab.protected, "python3 \(client) 198.18.1.2 20")
        flood.waitUntilExit()
        usleep(300_000)
        guard let m = r.stdout.firstMatch(of: #/RESULT (\d+) (\d+) (\d+)/#) else { throw HarnessError(r.stdout + r.stderr) }
        let e = Endings(refused: Int(m.1)!, reset: Int(m.2)!, rounds: Int(m.3)!,
                        refusedRSTs: try count(lab, "refused"), abortRSTs: try count(lab, "aborted"))
        let arrived = try lab.protectedCount("rst")
        if let agent {
            if !r.stderr.isEmpty { print("client: \(r.stderr)\nagent log:\n\(agent.log)") }
            #expect(agent.stop() == 0)
            #expect(agent.log.contains("\"vector\":\"rst\""), "no RST attack logged: \(agent.log)")
        }
        return (e, arrived, sent)
    }

    @Test func connectionsEndingInRSTBehaveAsWithoutTheAgentDuringAFlood() throws {
        try Env.requireReady()
        let (with, arrived, sent) = try Self.endingsUnderFlood(agent: true)
        let (without, arrived0, _) = try Self.endingsUnderFlood(agent: false)
        measured("RST endings during a spread RST flood (\(sent) forged at 4,000/s over 198.18.2.0/24): with the agent "
                 + "refused \(with.refused)/\(with.rounds), reset \(with.reset)/\(with.rounds), RSTs reaching the host: refusals "
                 + "\(with.refusedRSTs), aborts \(with.abortRSTs), forged \(arrived)/\(sent); without: refused \(without.refused), "
                 + "reset \(without.reset), refusals \(without.refusedRSTs), aborts \(without.abortRSTs), forged \(arrived0)/\(sent)")
        #expect(with == without)
        #expect(with.refused == with.rounds && with.reset == with.rounds)
        #expect(Double(arrived) <= 0.2 * Double(sent), "forged RSTs that reached the protected host: \(arrived) of \(sent)")
        #expect(Double(arrived0) >= 0.9 * Double(sent), "the control's flood reached the host: \(arrived0) of \(sent)")
    }

    /// A TCP client of RFC 793's day, on a raw socket: it takes any RST inside its window (RFC
    /// 793 §3.4), as stacks without RFC 5961 do. Handshake, then a 4-byte ping every 100 ms that
    /// the server echoes, for `seconds`; prints PORT when established, then DEAD or ALIVE.
    static let rfc793Client = """
        import socket, struct, random, sys, time, select
        src, dst, dport, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        sport = random.randint(40000, 50000)
        WIN = 65535
        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        # A sweep arrives faster than Python reads: a small buffer loses RSTs, the hit among them.
        rx.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)   # SO_RCVBUFFORCE (root)
        def csum(b):
            if len(b) % 2: b += b'\\0'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        def send(seq, ack, flags, data=b''):
            h = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff, ack & 0xffffffff, 5 << 4, flags, WIN, 0, 0)
            ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(h) + len(data))
            h = h[:16] + struct.pack('!H', csum(ph + h + data)) + h[18:]
            tx.sendto(h + data, (dst, 0))
        def recv(timeout):
            r, _, _ = select.select([rx], [], [], timeout)
            if not r: return None
            p = rx.recv(2048)
            ihl = (p[0] & 15) * 4
            if socket.inet_ntoa(p[12:16]) != dst: return None
            sp, dp, seq, ack, off, fl = struct.unpack('!HHIIBB', p[ihl:ihl + 14])
            if sp != dport or dp != sport: return None
            return seq, ack, fl, len(p) - ihl - (off >> 4) * 4
        isn = random.getrandbits(32)
        send(isn, 0, 0x02)
        deadline = time.time() + 5
        while True:
            if time.time() > deadline: print('NOCONNECT'); sys.exit(1)
            s = recv(1)
            if s and s[2] & 0x12 == 0x12: break
        snd, rcv = isn + 1, (s[0] + 1) & 0xffffffff
        send(snd, rcv, 0x10)
        print('PORT', sport, flush=True)
        rsts = 0
        end = time.time() + seconds
        nextping = 0
        while time.time() < end:
            if time.time() >= nextping:
                send(snd, rcv, 0x18, b'ping'); snd += 4; nextping = time.time() + 0.1
            s = recv(0.02)
            if not s: continue
            seq, ack, fl, n = s
            if fl & 0x04:
                rsts += 1
                if (seq - rcv) & 0xffffffff < WIN:
                    print('DEAD', rsts, flush=True); sys.exit(0)
                continue
            if n > 0 and seq == rcv:
                rcv = (rcv + n) & 0xffffffff
                send(snd, rcv, 0x10)
        print('ALIVE', rsts, flush=True)
        """

    static let echoServer = """
        import socket, threading
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(('0.0.0.0', 179))
        l.listen(8)
        def serve(c):
            while True:
                d = c.recv(4096)
                if not d: return
                c.sendall(d)
        while True:
            c, _ = l.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        """

    /// A blind attacker who knows the 4-tuple of the session but not its sequence numbers: one
    /// RST per half-window step of the whole sequence space, so two land in the window (a
    /// loaded machine's control run once survived a one-per-window sweep: its client missed the
    /// one RST that hit). With a fourth argument, that one sequence number instead (an aimed RST).
    static let sweeper = """
        import socket, struct, sys, random
        src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
        aimed = [int(sys.argv[4])] if len(sys.argv) > 4 else None
        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        def csum(b):
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return ~s & 0xffff
        ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, 20)
        off = random.getrandbits(16)
        n = 0
        for seq in aimed or ((k * 32767 + off) & 0xffffffff for k in range(131076)):
            h = struct.pack('!HHIIBBHHH', 179, dport, seq, 0, 5 << 4, 0x04, 0, 0, 0)
            h = h[:16] + struct.pack('!H', csum(ph + h)) + h[18:]
            tx.sendto(h, (dst, 0)); n += 1
        print('SENT', n)
        """

    struct Survival { var alive: Bool, rstsSeen: Int, rstsArrived: Int, sent: Int }

    static func blindResetSweep(agent withAgent: Bool) throws -> Survival {
        let lab = try LabNet(withAgent ? "blind" : "blind0", family: family)
        defer { lab.tearDown() }
        try prepare(lab)
        let server = lab.tempPath("echo.py"), client = lab.tempPath("rfc793.py"), sweep = lab.tempPath("sweep.py")
        try echoServer.write(toFile: server, atomically: true, encoding: .utf8)
        try rfc793Client.write(toFile: client, atomically: true, encoding: .utf8)
        try sweeper.write(toFile: sweep, atomically: true, encoding: .utf8)
        _ = try lab.spawn(lab.inet, ["python3", server])
        usleep(300_000)
        var agent: AgentProcess?
        if withAgent { agent = try AgentProcess(lab, protect + InlineAgentTests.agentOnly + ["-D", "track_full_ports={ 179 }"]) }
        let out = lab.tempPath("rfc793.out")
        let peer = try lab.spawn(lab.protected, ["python3", client, "198.18.2.2", "198.18.1.2", "179", "12"], stdoutFile: out)
        var port = 0
        for _ in 0..<100 {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            if let m = text.firstMatch(of: #/PORT (\d+)/#) { port = Int(m.1)!; break }
            usleep(100_000)
        }
        guard port > 0 else { throw HarnessError("the RFC 793 client did not connect: \(agent?.log ?? "")") }
        // A few pings first, so the session has moved past its handshake.
        usleep(1_000_000)
        let s = try lab.exec(lab.inet, "python3 \(sweep) 198.18.1.2 198.18.2.2 \(port)")
        peer.waitUntilExit()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let sent = Int(s.stdout.firstMatch(of: #/SENT (\d+)/#)?.1 ?? "0") ?? 0
        let seen = Int(text.firstMatch(of: #/(?:ALIVE|DEAD) (\d+)/#)?.1 ?? "-1") ?? -1
        let result = Survival(alive: text.contains("ALIVE"), rstsSeen: seen, rstsArrived: try count(lab, "blind"), sent: sent)
        if let agent {
            if !result.alive { print("peer: \(text)\nagent log:\n\(agent.log)") }
            #expect(agent.stop() == 0)
        }
        return result
    }

    @Test func guardedSessionSurvivesABlindResetSweep() throws {
        try Env.requireReady()
        let with = try Self.blindResetSweep(agent: true)
        let without = try Self.blindResetSweep(agent: false)
        measured("blind-reset sweep on a guarded BGP session (-D track_full_ports={ 179 }), RFC 793 endpoint: with the agent "
                 + "\(with.alive ? "alive" : "dead"), \(with.rstsArrived) of \(with.sent) forged RSTs reached the host; without: "
                 + "\(without.alive ? "alive" : "dead") after \(without.rstsSeen) RSTs (\(without.rstsArrived) reached the host)")
        #expect(with.alive, "the guarded session died: \(with)")
        #expect(with.rstsArrived == 0, "forged RSTs that reached the protected host: \(with.rstsArrived) of \(with.sent)")
        #expect(!without.alive, "the control survived the sweep: \(without)")
        #expect(without.sent == 131076)
    }
}
