import Foundation
import Testing
import TestSupport

/// An RST flood bigger than the queue (a 256-packet queue, trafgen at full speed): the agent arms
/// the kernel's RST meter for the attacked /24 (`rst_armed4`), which cuts the flood before the
/// queue while the RSTs of flows the kernel knows still reach the queue and the client: refusals
/// (pending SYNs), aborts of fresh connections, and the abort of a connection older than the
/// pending set's horizon (a learnt flow). Once the flood stops the attack ends and the arming
/// runs out.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct RSTArmingTests {
    static let metricsPort = 9477

    /// A connection that idles with a ping every 300 ms until the server aborts it (SO_LINGER 0)
    /// once the trigger file exists.
    static let oldServer = """
        import socket, struct, os, sys, time
        trigger = sys.argv[1]
        l = socket.socket()
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(('0.0.0.0', 7002))
        l.listen(8)
        c, _ = l.accept()
        c.settimeout(0.1)
        while not os.path.exists(trigger):
            try:
                c.recv(100)
            except socket.timeout:
                pass
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        c.close()
        time.sleep(1)
        """

    static let oldClient = """
        import socket, sys, time
        s = socket.create_connection((sys.argv[1], 7002), timeout=5)
        print('CONNECTED', flush=True)
        s.settimeout(0.1)
        end = time.time() + 90
        while time.time() < end:
            try:
                s.sendall(b'p')
                s.recv(10)
            except socket.timeout:
                time.sleep(0.2)
                continue
            except (ConnectionResetError, BrokenPipeError):
                print('RESET', flush=True); sys.exit(0)
            print('CLOSED', flush=True); sys.exit(0)
        print('NORESET', flush=True)
        """

    static func waitFor(_ seconds: Double, _ what: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try what() { return true }
            usleep(200_000)
        }
        return try what()
    }

    static func txPackets(_ lab: LabNet) throws -> Int {
        let out = try lab.exec(lab.inet, "cat /sys/class/net/i0/statistics/tx_packets").stdout
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    @Test func rstFloodBiggerThanTheQueueArmsTheKernelWhichKeepsKnownFlowsRSTs() throws {
        try Env.requireReady()
        let lab = try LabNet("arm", family: "rg12")
        defer { lab.tearDown() }
        try RSTInlineTests.prepare(lab)
        try lab.exec(lab.protected, "nft add table inet rg12old")
        try lab.exec(lab.protected, "nft add counter inet rg12old old")
        try lab.exec(lab.protected, "nft 'add chain inet rg12old pre { type filter hook prerouting priority -400; }'")
        try lab.exec(lab.protected, "nft add rule inet rg12old pre ip saddr 198.18.1.2 tcp sport 7002 tcp flags \\& rst == rst counter name old")

        let trigger = lab.tempPath("abort-now")
        let files = (lab.tempPath("abort.py"), lab.tempPath("endings.py"), lab.tempPath("old-server.py"), lab.tempPath("old-client.py"))
        try RSTInlineTests.abortServer.write(toFile: files.0, atomically: true, encoding: .utf8)
        try RSTInlineTests.endingsClient.write(toFile: files.1, atomically: true, encoding: .utf8)
        try Self.oldServer.write(toFile: files.2, atomically: true, encoding: .utf8)
        try Self.oldClient.write(toFile: files.3, atomically: true, encoding: .utf8)
        _ = try lab.spawn(lab.inet, ["python3", files.0])
        _ = try lab.spawn(lab.inet, ["python3", files.2, trigger])
        usleep(300_000)

        // A small queue the flood overflows, yet longer than one receive batch (64): the agent
        // reports an overload when its batches keep coming back full, and with a queue exactly one
        // batch long a loaded machine rarely saw a full one (the flood failed open, nothing armed).
        // Pending SYNs kept 3 s only, so the old connection's abort comes long after its SYN left
        // the pending set: only the learn set knows it.
        let agent = try AgentProcess(lab, RSTInlineTests.protect + [
            "--queue-maxlen", "256", "--metrics", "\(Self.metricsPort)",
            "-D", "syn_horizon=3s", "-D", "armed_timeout=4s", "-D", "attack_rate=100000000"])
        let oldOut = lab.tempPath("old.out")
        let old = try lab.spawn(lab.protected, ["python3", files.3, "198.18.1.2"], stdoutFile: oldOut)
        #expect(Self.waitFor(10) { ((try? String(contentsOfFile: oldOut, encoding: .utf8)) ?? "").contains("CONNECTED") })
        usleep(4_000_000)
        try lab.resetCounters()
        let txBefore = try Self.txPackets(lab)

        // Bounded: 6 million at full speed, stopped as soon as the checks are done.
        let flood = try lab.flood(.rstSpread, count: 6_000_000, gap: nil, background: true)!
        let armedSeen = try Self.waitFor(20) {
            try lab.exec(lab.router, "nft list set inet reflectguard rst_armed4").stdout.contains("198.18.2.0/24")
        }
        #expect(armedSeen, "rst_armed4 never held the attacked /24: \(agent.log)")
        let floodRunning = flood.isRunning
        let metricsArmed = AgentProcess.value(try agent.metrics(port: Self.metricsPort), "reflectguard_rst_armed")

        // Known flows' RSTs during the armed flood.
        // Timeouts of 20 s: a full-speed flood leaves the lab's Python servers little CPU.
        let r = try lab.exec(lab.protected, "python3 \(files.1) 198.18.1.2 20 20")
        _ = FileManager.default.createFile(atPath: trigger, contents: nil)
        let oldReset = Self.waitFor(15) { ((try? String(contentsOfFile: oldOut, encoding: .utf8)) ?? "").contains("RESET") }
        let stillFlooding = flood.isRunning
        if flood.isRunning { kill(flood.processIdentifier, SIGTERM) }
        flood.waitUntilExit()
        usleep(300_000)
        let sent = try Self.txPackets(lab) - txBefore
        let arrived = try lab.protectedCount("rst")
        // The rst_attack chain's drops, in the table's named counters.
        let cut = try ["4", "6"].map { try lab.exec(lab.router, "nft list counter inet reflectguard drop_rst_attack_limit_v\($0)").stdout }.joined()
        let cutDrops = cut.matches(of: #/packets (\d+)/#).reduce(0) { $0 + (Int($1.1) ?? 0) }
        guard let m = r.stdout.firstMatch(of: #/RESULT (\d+) (\d+) (\d+)/#) else { throw HarnessError(r.stdout + r.stderr) }
        let (refused, reset, rounds) = (Int(m.1)!, Int(m.2)!, Int(m.3)!)
        let refusedRSTs = try RSTInlineTests.count(lab, "refused"), abortRSTs = try RSTInlineTests.count(lab, "aborted")
        let oldRSTs = Int(try lab.exec(lab.protected, "nft list counter inet rg12old old").stdout
                            .firstMatch(of: #/packets (\d+)/#)?.1 ?? "0") ?? 0

        measured("RST flood bigger than a 256-packet queue: rst_armed4 armed (metrics \(Int(metricsArmed))); \(sent) forged RSTs "
                 + "sent at full speed, \(arrived) reached the protected host, \(cutDrops) dropped by the kernel's rst_attack meter; "
                 + "refused \(refused)/\(rounds), reset \(reset)/\(rounds) (RSTs reaching the host: refusals \(refusedRSTs), aborts "
                 + "\(abortRSTs)); old connection's abort (SYN past the pending set): \(oldReset ? "reached the client" : "lost"), "
                 + "\(oldRSTs) RST at the host")
        #expect(floodRunning && stillFlooding, "the flood ended before the checks: \(sent) sent")
        #expect(metricsArmed >= 1)
        #expect(refused == rounds && reset == rounds, "client: \(r.stderr)")
        #expect(oldReset, "the old connection's abort never reached its client")
        #expect(cutDrops > sent / 2, "the kernel's RST meter dropped \(cutDrops) of \(sent)")
        #expect(Double(arrived) <= 0.2 * Double(sent), "forged RSTs that reached the protected host: \(arrived) of \(sent)")
        #expect(agent.log.contains("\"event\":\"rst-armed\",\"prefix\":\"198.18.2.0/24\""), "\(agent.log)")

        // The flood is over: the attack ends (10 s quiet) and the arming runs out (4 s) unrenewed.
        let disarmed = try Self.waitFor(40) {
            !(try lab.exec(lab.router, "nft list set inet reflectguard rst_armed4").stdout.contains("198.18.2.0/24"))
        }
        #expect(disarmed, "rst_armed4 still holds the /24 40 s after the flood")
        #expect(Self.waitFor(5) { agent.log.contains("\"event\":\"rst-disarmed\"") }, "\(agent.log)")
        #expect(AgentProcess.value(try agent.metrics(port: Self.metricsPort), "reflectguard_rst_armed") == 0)
        old.waitUntilExit()
        #expect(agent.stop() == 0)
    }
}
