import Foundation
import Testing
import Rules
import TestSupport

/// The built binary on input it once read forever, read otherwise than nft, or passed to nft
/// unchecked: every command refuses it with CONTRACT's exit code, at once.
@Suite struct RulesBoundsCommandTests {
    /// A small capture to score (lab scenario), made once per process.
    static let capture: String? = {
        guard let bin = TestEnvironment.binary else { return nil }
        let path = TestEnvironment.temporaryPath("bounds-mixed.pcap")
        let r = NetnsLab.run([bin, "lab", "gen", "--scenario", "mixed", "--out", path, "--packets", "200"])
        return r.status == 0 ? path : nil
    }()

    static func run(_ args: [String], timeout: Double = 60) -> NetnsLab.Output? {
        guard let bin = TestEnvironment.binary else { return nil }
        return NetnsLab.run([bin] + args, timeout: timeout)
    }

    static func ready() -> (bin: String, capture: String)? {
        guard let bin = TestEnvironment.binary else {
            TestEnvironment.unavailable("the reflectguard binary is not built"); return nil
        }
        guard let capture else { TestEnvironment.unavailable("reflectguard lab gen failed"); return nil }
        return (bin, capture)
    }

    /// /dev/zero was read until memory ran out; a FIFO nobody writes blocked the open forever.
    @Test func aDeviceOrAPipeAsRulesExits1AtOnce() throws {
        guard let (_, capture) = Self.ready() else { return }
        let fifo = TestEnvironment.temporaryPath("bounds-rules.fifo")
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        for (args, path, why) in [
            (["score", capture, "--rules", "/dev/zero"], "/dev/zero", "a character device, not a regular file"),
            (["score", capture, "--rules", "/dev/urandom"], "/dev/urandom", "a character device, not a regular file"),
            (["nft", "check", "--rules", fifo], fifo, "a pipe, not a regular file"),
            (["nft", "generate", "--backend", "xt", "--rules", fifo], fifo, "a pipe, not a regular file"),
        ] {
            let r = try #require(Self.run(args, timeout: 30))
            #expect(r.status == 1, "\(args): \(r.status) \(r.stderr.prefix(300))")
            #expect(r.stderr == "Error: cannot read rules file \(path): \(why)\n", "\(r.stderr.prefix(300))")
            #expect(r.stdout.isEmpty)
        }
    }

    /// `score` with the embedded rules never asked nft, so it scored with values `run` and
    /// `nft check` reject. Now every command refuses them before nft, as rules errors (exit 3) at
    /// the define's FILE:LINE:COL; a `-D` that is not one clean NAME=VALUE line is a usage error.
    @Test(arguments: [("syn_horizon=99999999d", 3), ("rst_rate=+5", 3), ("rst_rate=$rst_burst", 3), ("rst_rate=010", 3),
                      ("syn_table_size=100000000", 3), ("queue_mark=0x0", 3), ("protected_v4=198.18.2.010", 3),
                      ("mode=sideways", 3), ("rst_rate=5\r\nflush ruleset", 2), ("rst_rate=5\rx", 2)])
    func badDefineValuesAreRefusedInEveryCommand(define: String, exit: Int32) throws {
        guard let (_, capture) = Self.ready() else { return }
        for args in [["score", capture, "--protect", "198.18.2.0/24"], ["nft", "generate", "--backend", "xt"]] {
            let r = try #require(Self.run(args + ["-D", define]))
            #expect(r.status == exit, "\(args) -D \(define.debugDescription): \(r.status) \(r.stderr)")
            #expect(r.stderr.hasPrefix(exit == 3 ? "Error: \(RulesFile.embeddedName):" : "Error: "), "\(r.stderr)")
            if exit == 2 { #expect(r.stderr.contains("--help")) }
            #expect(r.stdout.isEmpty)
        }
    }

    @Test func addressesNftReadsOtherwiseAreRefused() throws {
        guard let (_, capture) = Self.ready() else { return }
        for p in ["198.18.2.010", "198.18.2.0/024", "2001:db8:2::/064", "::ffff:198.18.2.010"] {
            let r = try #require(Self.run(["score", capture, "--protect", p]))
            #expect(r.status == 2, "--protect \(p): \(r.stderr)")
            #expect(r.stderr.contains("leading zero"), "\(r.stderr)")
        }
        let path = TestEnvironment.temporaryPath("bounds-octal.nft")
        defer { unlink(path) }
        let text = RulesFile.embedded.text.replacingOccurrences(of: "define protected_v4 = { }",
                                                                with: "define protected_v4 = { 198.18.2.010 }")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let line = text.split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.hasPrefix("define protected_v4") }! + 1
        for args in [["score", capture], ["nft", "generate", "--backend", "xt"]] {
            let r = try #require(Self.run(args + ["--rules", path]))
            #expect(r.status == 3, "\(args): \(r.stderr)")
            #expect(r.stderr.hasPrefix("Error: \(path):\(line):25: error: protected_v4: '198.18.2.010': octet '010'"),
                    "\(r.stderr)")
        }
    }

    /// nft applied `flush ruleset` from a rules file with exit 0, taking every table with it.
    @Test func flushRulesetInARulesFileExits3AndChangesNothing() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-bflush"])
        let ns = n.names[0]
        try n.must(ns, ["nft", "add table inet foreign; add chain inet foreign c { type filter hook input priority 0; }; add rule inet foreign c tcp dport 22 accept"])
        let ok = n.reflectguard(ns, ["nft", "apply", "--backend", "xt", "--protect", "198.18.2.0/24"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let before = try n.must(ns, ["nft", "list", "ruleset"]).stdout
        let path = TestEnvironment.temporaryPath("bounds-flush.nft")
        defer { unlink(path) }
        for (text, line) in [("flush ruleset\n" + RulesFile.embedded.text, 1),
                             (RulesFile.embedded.text + "\ntable inet foreign {\n}\ndelete table inet foreign\n",
                              RulesFile.embedded.text.split(separator: "\n", omittingEmptySubsequences: false).count + 1)] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            for action in ["check", "apply"] {
                let r = n.reflectguard(ns, ["nft", action, "--backend", "xt", "--rules", path, "--protect", "198.18.2.0/24"])
                #expect(r.status == 3, "\(action): \(r.status) \(r.stderr)")
                #expect(r.stderr.hasPrefix("Error: \(path):\(line):1: error: "), "\(r.stderr)")
                #expect(try n.must(ns, ["nft", "list", "ruleset"]).stdout == before, "\(action) changed the ruleset")
            }
        }
    }

    /// A SIGHUP onto a FIFO or a device: the reload is refused at once, the agent keeps running
    /// with its rules, and exits 0 on SIGTERM.
    @Test func reloadOntoADeviceOrAPipeKeepsTheRules() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-bhup"])
        let ns = n.names[0]
        let rules = TestEnvironment.temporaryPath("bounds-hup.nft")
        let log = TestEnvironment.temporaryPath("bounds-hup.log")
        let fifo = TestEnvironment.temporaryPath("bounds-hup.fifo")
        defer { for f in [rules, log, fifo] { unlink(f) } }
        try RulesFile.embedded.text.write(toFile: rules, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: TestEnvironment.which("ip")!)
        agent.arguments = ["netns", "exec", NetnsLab.Namespaces.kernelName(ns), TestEnvironment.binary!, "run", "--rules", rules,
                           "--protect", "198.18.2.0/24", "--queue", "7"]
        agent.standardError = FileHandle(forWritingAtPath: log)
        agent.standardOutput = FileHandle.nullDevice
        try agent.run()
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL); agent.waitUntilExit() } }
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        func waitFor(_ needle: String, count: Int = 1) -> Bool {
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline && agent.isRunning {
                if logText().components(separatedBy: needle).count - 1 >= count { return true }
                usleep(50_000)
            }
            return false
        }
        try #require(waitFor("\"event\":\"start\""), "agent did not start: \(logText())")
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        for (i, target) in [fifo, "/dev/zero"].enumerated() {
            unlink(rules)
            #expect(symlink(target, rules) == 0)
            kill(agent.processIdentifier, SIGHUP)
            #expect(waitFor("\"event\":\"reload-failed\"", count: i + 1), "\(target): \(logText())")
            #expect(agent.isRunning, "\(target): the agent exited: \(logText())")
            #expect(n.exec(ns, ["nft", "list", "table", "inet", "reflectguard"]).status == 0, "\(target): rules gone")
        }
        #expect(logText().contains("a pipe, not a regular file"))
        #expect(logText().contains("a character device, not a regular file"))
        kill(agent.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while agent.isRunning && Date() < deadline { usleep(50_000) }
        try #require(!agent.isRunning, "the agent did not exit on SIGTERM: \(logText())")
        #expect(agent.terminationStatus == 0, "\(logText())")
        #expect(n.exec(ns, ["nft", "list", "table", "inet", "reflectguard"]).status != 0, "the agent removes its rules at exit")
    }
}
