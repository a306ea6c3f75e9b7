import Foundation
import Testing
import TestSupport

/// Who owns ReflectGuard's kernel objects, on a real kernel (issue 11, items 1 and 8): one agent
/// per network namespace, a second `run` refused before it touches anything, `nft apply` and
/// `nft remove` careful around a live agent, a table adopted from `nft apply` or a dead agent,
/// start failures that leave the kernel as it was, and an agent that keeps CAP_NET_ADMIN alone.
/// Labs of three namespaces named `rgt-own-*`; the agent always runs in the lab's router.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct OwnershipTests {
    static let protect = InlineAgentTests.protect
    static let agentOnly = InlineAgentTests.agentOnly
    static let port = 9477

    /// Everything of the router's packet filtering a second instance could disturb: the nft
    /// ruleset and both iptables-nft views of every table (byte for byte).
    static func kernelState(_ lab: LabNet) throws -> String {
        var s = try lab.exec(lab.router, "nft list ruleset").stdout
        for tool in ["iptables-nft", "ip6tables-nft"] {
            for table in ["mangle", "filter"] {
                s += try lab.exec(lab.router, "\(tool) -t \(table) -S").stdout
            }
        }
        return s
    }

    static func ownerRecord(_ lab: LabNet) throws -> String {
        try lab.exec(lab.router, "nft list chain inet reflectguard owner", check: false).stdout
    }

    /// A `reflectguard` command in the router, bounded in time (an old agent would just run).
    static func reflectguard(_ lab: LabNet, _ args: String, seconds: Int = 15) throws -> CommandResult {
        try lab.exec(lab.router, "timeout \(seconds) '\(Env.binary)' \(args)", check: false)
    }

    /// Agent A runs on queue 0. A second `run` on queue 1 with A's metrics port (which used to
    /// apply rules, fail on the port and delete A's table in its clean-up) and a second dry run
    /// (which used to move all queueing to its queue, where everything is accepted, and delete
    /// the table at exit) are both refused at once, naming A, and change nothing: A still stops
    /// a flood.
    @Test func aSecondRunIsRefusedBeforeItTouchesAnything() throws {
        try Env.requireReady()
        let lab = try LabNet("second", family: "rgt-own")
        defer { lab.tearDown() }
        let first = try AgentProcess(lab, Self.protect + Self.agentOnly + ["--metrics", "\(Self.port)"])
        let pid = first.process.processIdentifier
        let before = try Self.kernelState(lab)

        for second in ["run --queue 1 --protect 198.18.2.0/24 --metrics \(Self.port)",
                       "run --queue 1 --dry-run --protect 198.18.2.0/24",
                       "run --queue 0:3 --no-apply --protect 198.18.2.0/24"] {
            let r = try Self.reflectguard(lab, second)
            #expect(r.status == 1, "\(second): refused (exit 1): \(r.status) \(r.stderr.suffix(500))")
            #expect(r.stderr.contains("pid \(pid)"), "\(second): the message names the running agent: \(r.stderr.suffix(500))")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(second): one line: \(r.stderr.suffix(500))")
            #expect(try Self.kernelState(lab) == before, "\(second): the running agent's rules are untouched")
        }

        #expect(first.process.isRunning)
        try lab.resetCounters()
        _ = try lab.flood(.synack, count: 2_000, gap: "50us")
        usleep(300_000)
        #expect(try lab.protectedCount("synack") == 0, "the first agent still protects")
        #expect(first.stop() == 0)
        #expect(try lab.exec(lab.router, "nft list table inet reflectguard", check: false).status != 0, "its own table removed")
    }

    /// `nft apply` then `run` is normal, and the agent leaves the operator's table at exit (it
    /// did not make it), with its record given back. A table left by an agent that was killed
    /// is adopted, named in the log, and removed at exit, with the xtables rules and the
    /// `mangle` tables iptables-nft made for them.
    @Test func tablesFromNftApplyStayAndTablesOfDeadAgentsAreAdopted() throws {
        try Env.requireReady()
        let lab = try LabNet("adopt", family: "rgt-own")
        defer { lab.tearDown() }
        let apply = try Self.reflectguard(lab, "nft apply " + Self.protect.joined(separator: " "))
        try #require(apply.status == 0, "\(apply.stderr)")
        #expect(try Self.ownerRecord(lab).contains("reflectguard nft apply"), "nft apply records itself")

        let agent = try AgentProcess(lab, Self.protect + Self.agentOnly)
        let pid = agent.process.processIdentifier
        #expect(try Self.ownerRecord(lab).contains("reflectguard run pid=\(pid) "), "the running agent records itself")
        #expect(agent.log.contains("\"event\":\"rules-adopted\""), "\(agent.log)")
        #expect(agent.stop() == 0, "\(agent.log)")
        #expect(try lab.exec(lab.router, "nft list table inet reflectguard", check: false).status == 0,
                "the table nft apply made stays")
        #expect(try Self.ownerRecord(lab).contains("reflectguard nft apply"), "with its record given back")
        let removed = try Self.reflectguard(lab, "nft remove")
        #expect(removed.status == 0, "nft remove needs no --force once no agent runs: \(removed.stderr)")

        // An agent killed with SIGKILL leaves its table; the next one adopts it and removes it.
        let killed = try AgentProcess(lab, Self.protect + Self.agentOnly)
        let dead = killed.process.processIdentifier
        killed.signal(SIGKILL)
        killed.process.waitUntilExit()
        #expect(try Self.ownerRecord(lab).contains("reflectguard run pid=\(dead) "), "the dead agent's record stays")
        let next = try AgentProcess(lab, Self.protect + Self.agentOnly)
        #expect(next.log.contains("agent pid \(dead)"), "the adoption names the dead agent: \(next.log)")
        #expect(next.stop() == 0, "\(next.log)")
        let tables = try lab.exec(lab.router, "nft list tables").stdout
        #expect(!tables.contains("reflectguard"), "the adopted table is removed at exit: \(tables)")
        #expect(!tables.contains("mangle"), "no empty mangle tables left behind: \(tables)")
        #expect(!(try Self.kernelState(lab).contains("reflectguard")), "no tagged xtables rule left")
    }

    /// While an agent that applied its rules runs, `nft remove` and `nft apply` refuse (exit 1,
    /// naming it) and change nothing; `--force` does it with a warning, and the agent's exit then
    /// leaves what is not its own. An agent started with --no-apply leaves the rules to
    /// `nft apply`, which then works as usual, and `nft remove` still asks for --force.
    @Test func nftApplyAndRemoveRespectARunningAgent() throws {
        try Env.requireReady()
        let lab = try LabNet("nftcmd", family: "rgt-own")
        defer { lab.tearDown() }
        let agent = try AgentProcess(lab, Self.protect + Self.agentOnly)
        let pid = agent.process.processIdentifier
        let before = try Self.kernelState(lab)
        for command in ["nft remove", "nft apply --protect 198.18.3.0/24"] {
            let r = try Self.reflectguard(lab, command)
            #expect(r.status == 1, "\(command) refused while the agent owns the rules: \(r.stderr)")
            #expect(r.stderr.contains("pid \(pid)") && r.stderr.contains("--force"), "\(command): \(r.stderr)")
            #expect(try Self.kernelState(lab) == before, "\(command) changed nothing")
        }
        let forced = try Self.reflectguard(lab, "nft apply --force " + Self.protect.joined(separator: " "))
        #expect(forced.status == 0 && forced.stderr.contains("warning"), "\(forced.stderr)")
        #expect(try Self.ownerRecord(lab).contains("reflectguard nft apply"))
        // The rules watchdog (twice a second) sees the take-over and leaves the forced rules be:
        // it once re-applied the agent's own over them, and the agent then removed them at exit.
        try agent.waitForLog("\"event\":\"rules-taken-over\"", seconds: 10)
        usleep(1_200_000)
        #expect(!agent.log.contains("\"event\":\"rules-reapplied\""), "\(agent.log)")
        #expect(try Self.ownerRecord(lab).contains("reflectguard nft apply"))
        #expect(agent.stop() == 0, "\(agent.log)")
        #expect(agent.log.contains("\"event\":\"rules-left\""), "the forced rules are no longer the agent's: \(agent.log)")
        #expect(try lab.exec(lab.router, "nft list table inet reflectguard", check: false).status == 0)

        let unmanaged = try AgentProcess(lab, Self.protect + Self.agentOnly + ["--no-apply"])
        let reapply = try Self.reflectguard(lab, "nft apply " + Self.protect.joined(separator: " "))
        #expect(reapply.status == 0, "nft apply manages the rules of a --no-apply agent: \(reapply.stderr)")
        let remove = try Self.reflectguard(lab, "nft remove")
        #expect(remove.status == 1 && remove.stderr.contains("pid \(unmanaged.process.processIdentifier)"), "\(remove.stderr)")
        let forcedRemove = try Self.reflectguard(lab, "nft remove --force")
        #expect(forcedRemove.status == 0 && forcedRemove.stderr.contains("warning"), "\(forcedRemove.stderr)")
        #expect(try lab.exec(lab.router, "nft list table inet reflectguard", check: false).status != 0)
        #expect(unmanaged.stop() == 0)
    }

    /// Whatever can fail at start fails before the rules are touched: a busy metrics port (it
    /// used to fail after applying, and the clean-up deleted a table `nft apply` had made), and
    /// flow tables the address space cannot hold (they used to abort the process after the
    /// rules were applied, leaving them). Exit 1 with a clear message, the kernel as it was.
    @Test func startFailuresLeaveTheKernelAsItWas() throws {
        try Env.requireReady()
        let lab = try LabNet("startfail", family: "rgt-own")
        defer { lab.tearDown() }
        let protect = Self.protect.joined(separator: " ")

        // 4M entries map 278 MiB; the process itself needs about 120 MiB of address space.
        let clean = try Self.kernelState(lab)
        let big = try lab.exec(lab.router, "timeout 15 prlimit --as=\(256 << 20) '\(Env.binary)' run \(protect) -D syn_table_size=4000000",
                               check: false)
        #expect(big.status == 1, "exit 1, not an abort: \(big.status) \(big.stderr.suffix(300))")
        #expect(big.stderr.contains("syn_table_size"), "\(big.stderr.suffix(300))")
        #expect(try Self.kernelState(lab) == clean, "nothing applied")

        let apply = try Self.reflectguard(lab, "nft apply " + protect)
        try #require(apply.status == 0, "\(apply.stderr)")
        let applied = try Self.kernelState(lab)
        let holder = try lab.spawn(lab.router, ["python3", "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', \(Self.port))); s.listen(); time.sleep(60)"])
        defer { kill(holder.processIdentifier, SIGKILL) }
        // Wait for the holder to listen (a loaded machine took longer than half a second).
        var listening = false
        for _ in 0..<100 where !listening {
            listening = try lab.exec(lab.router, "ss -Hltn 'sport = :\(Self.port)'", check: false).stdout.contains(":\(Self.port)")
            if !listening { usleep(100_000) }
        }
        try #require(listening, "the port holder listens")
        let busy = try Self.reflectguard(lab, "run \(protect) --metrics \(Self.port)")
        #expect(busy.status == 1, "\(busy.stderr)")
        #expect(busy.stderr.contains("metrics"), "\(busy.stderr)")
        #expect(try Self.kernelState(lab) == applied, "the table nft apply made is untouched")
    }

    /// Set up, the agent keeps CAP_NET_ADMIN alone, in every thread and in the bounding set (so
    /// the iptables-nft it starts as uid 0 gets nothing more back), with no_new_privs; and with
    /// that alone it still arms a victim, reloads on SIGHUP and removes its rules at exit.
    @Test func theAgentKeepsOnlyNetAdminAndStillDoesItsJob() throws {
        try Env.requireReady()
        let lab = try LabNet("caps", family: "rgt-own")
        defer { lab.tearDown() }
        try InlineAgentTests.servers(lab)
        let agent = try AgentProcess(lab, Self.protect + ["--metrics", "\(Self.port)", "--queue-maxlen", "65536"])
        let pid = agent.process.processIdentifier
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        #expect(tasks.count > 1, "workers and the metrics server run: \(tasks)")
        for task in tasks {
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
            func field(_ name: String) -> String {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                    .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) } ?? "?"
            }
            #expect(field("Uid").hasPrefix("0"), "still root")
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                #expect(field(set) == "0000000000001000", "thread \(task) \(set): CAP_NET_ADMIN only, not \(field(set))")
            }
            #expect(field("CapInh") == "0000000000000000" && field("CapAmb") == "0000000000000000", "thread \(task)")
            #expect(field("NoNewPrivs") == "1", "thread \(task)")
        }

        // Arming (libnftables) under a flood the default attack threshold sees.
        try lab.resetCounters()
        try InlineAgentTests.underFlood(lab, [(.synack, 20_000, "20us")], legit: 5, "with CAP_NET_ADMIN alone")
        try agent.waitForLog("\"event\":\"victim-armed\"", seconds: 10)
        #expect(try lab.exec(lab.router, "nft list set inet reflectguard armed4").stdout.contains("198.18.2.0/24"))

        // A reload re-applies the rules (and lists the xtables ones through iptables-nft).
        agent.signal(SIGHUP)
        try agent.waitForLog("\"event\":\"reload\"", seconds: 10)
        #expect(!agent.log.contains("reload-failed"), "\(agent.log)")

        #expect(agent.stop() == 0, "\(agent.log)")
        #expect(agent.log.contains("\"rules_removed\":true"), "\(agent.log)")
        #expect(!(try Self.kernelState(lab).contains("reflectguard")), "table and xtables rules removed with CAP_NET_ADMIN alone")
    }

    /// iptables-nft comes from the system directories, never from an earlier PATH entry: a fake
    /// one first in PATH is never run, by `nft apply` or by the agent.
    @Test func childToolsComeFromTheSystemDirectories() throws {
        try Env.requireReady()
        let lab = try LabNet("path", family: "rgt-own")
        defer { lab.tearDown() }
        let dir = lab.tempPath("fakebin")
        let marker = dir + "/ran"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for tool in ["iptables-nft", "ip6tables-nft"] {
            try "#!/bin/sh\ntouch '\(marker)'\nexit 1\n".write(toFile: "\(dir)/\(tool)", atomically: true, encoding: .utf8)
            chmod("\(dir)/\(tool)", 0o755)
        }
        let protect = Self.protect.joined(separator: " ")
        let apply = try lab.exec(lab.router, "env PATH='\(dir):/usr/sbin:/usr/bin:/sbin:/bin' '\(Env.binary)' nft apply --backend xt \(protect)",
                                 check: false)
        #expect(apply.status == 0, "\(apply.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker), "the fake iptables-nft in PATH ran")
        #expect(try lab.exec(lab.router, "iptables-nft -t mangle -S").stdout.contains("reflectguard"), "the real one added the rule")

        let agent = try AgentProcess(lab, Self.protect + Self.agentOnly + ["--backend", "xt"],
                                     launcher: ["env", "PATH=\(dir):/usr/sbin:/usr/bin:/sbin:/bin"])
        #expect(agent.stop() == 0, "\(agent.log)")
        #expect(!FileManager.default.fileExists(atPath: marker), "the agent ran the fake iptables-nft in PATH")
    }
}
