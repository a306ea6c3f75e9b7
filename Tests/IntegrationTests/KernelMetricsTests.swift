import Foundation
import Testing
import TestSupport

/// What /metrics says about the drops the kernel makes without the agent seeing a packet (armed
/// victims, `kernel_enforce = always`, RST meters), checked against the table's own counters and
/// against what reached the protected host; every scrape passes `promtool check metrics`.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct KernelMetricsTests {
    static let port = 9477
    static let family = "rg14m"

    static func scrape(_ agent: AgentProcess, host: String = "127.0.0.1") throws -> String {
        let text = try agent.metrics(port: port)
        try #require(text.contains("reflectguard_build_info"), "a scrape came back: \(text.prefix(300))")
        return text
    }

    /// `promtool check metrics` on a scrape: exit 0 and nothing printed.
    static func expectPromtoolClean(_ text: String, _ lab: LabNet, sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard let promtool = TestEnvironment.which("promtool") else {
            return TestEnvironment.unavailable("promtool (scripts/setup.sh installs Debian's prometheus)", sourceLocation: sourceLocation)
        }
        let f = lab.tempPath("scrape.txt")
        try text.write(toFile: f, atomically: true, encoding: .utf8)
        let r = try sh("'\(promtool)' check metrics < \(f) 2>&1", check: false)
        #expect(r.status == 0 && r.stdout.isEmpty, "promtool check metrics: \(r.stdout)", sourceLocation: sourceLocation)
    }

    static func kernelDrops(_ m: String, _ family: String, _ reason: String) -> Double {
        AgentProcess.value(m, "reflectguard_kernel_drops_total{family=\"\(family)\",reason=\"\(reason)\"}")
    }

    /// The table's counter, read with nft.
    static func nftCounter(_ lab: LabNet, _ name: String) throws -> Double {
        let r = try lab.exec(lab.router, "nft list counter inet reflectguard \(name)")
        guard let m = r.stdout.firstMatch(of: #/packets (\d+)/#), let n = Double(m.1) else {
            throw HarnessError("counter \(name): \(r.stdout)")
        }
        return n
    }

    /// The must-show: a SYN-ACK flood arms its victim's prefix, and two scrapes taken while the
    /// armed flood still runs show the kernel's drops growing; promtool passes on both.
    @Test func scrapedDuringAnArmedFloodTheKernelDropsGrow() throws {
        try Env.requireReady()
        let lab = try LabNet("armed", family: Self.family)
        defer { lab.tearDown() }
        // Default detection (attack_rate): the flood arms 198.18.2.0/24 within milliseconds.
        let agent = try AgentProcess(lab, InlineAgentTests.protect + ["--metrics", "\(Self.port)"])
        try lab.resetCounters()
        // About 8 s at 10,000/s: long enough to scrape twice while it lasts, however slow the machine.
        let sent = 80_000
        let flood = try lab.flood(.synack, count: sent, gap: "100us", background: true)!

        var armed: String? = nil
        let deadline = Date().addingTimeInterval(20)
        while flood.isRunning, Date() < deadline {
            let m = try Self.scrape(agent)
            if AgentProcess.value(m, "reflectguard_victims_armed") >= 1, Self.kernelDrops(m, "ipv4", "unsolicited-synack") > 0 {
                armed = m
                break
            }
            usleep(200_000)
        }
        let first = try #require(armed, "the victim was armed and the kernel dropped while the flood ran: \(agent.log.suffix(1500))")
        usleep(1_000_000)
        let second = try Self.scrape(agent)
        let stillRunning = flood.isRunning
        flood.waitUntilExit()
        // What was sent has been judged: the kernel's, the agent's and the host's counts are still.
        _ = try settled {
            let m = try Self.scrape(agent)
            return [Self.kernelDrops(m, "ipv4", "unsolicited-synack"),
                    AgentProcess.value(m, "reflectguard_packets_total{queue=\"0\",verdict=\"drop\",reason=\"unsolicited-synack\"}"),
                    Double(try lab.protectedCount("synack"))]
        }

        let a = Self.kernelDrops(first, "ipv4", "unsolicited-synack"), b = Self.kernelDrops(second, "ipv4", "unsolicited-synack")
        measured("armed flood: kernel drops \(Int(a)) then \(Int(b)) one second later (flood still running: \(stillRunning))")
        #expect(stillRunning, "the second scrape was taken during the flood (machine too slow: raise the flood's count)")
        #expect(b > a, "kernel drops grew between two scrapes: \(a) → \(b)")
        try Self.expectPromtoolClean(first, lab)
        try Self.expectPromtoolClean(second, lab)

        // After the flood: what /metrics says is what the table counted, and the kernel's drops
        // plus the agent's and what arrived account for what was sent (a little may be lost in
        // the veths under load, never more than was sent).
        let last = try Self.scrape(agent)
        let exported = Self.kernelDrops(last, "ipv4", "unsolicited-synack")
        let counted = try Self.nftCounter(lab, "drop_unsolicited_synack_v4")
        #expect(exported == counted, "/metrics against nft list counter")
        let agentDropped = AgentProcess.value(last, "reflectguard_packets_total{queue=\"0\",verdict=\"drop\",reason=\"unsolicited-synack\"}")
        let arrived = Double(try lab.protectedCount("synack"))
        measured("armed flood: \(sent) sent, \(Int(exported)) dropped by the kernel, \(Int(agentDropped)) by the agent, \(Int(arrived)) arrived")
        #expect(exported + agentDropped + arrived <= Double(sent))
        #expect(exported + agentDropped + arrived >= Double(sent) * 0.9)
        #expect(agent.stop() == 0)
    }

    /// `kernel_enforce = always`: every forged IPv6 SYN-ACK and every RST past the meter's burst
    /// is dropped by the kernel; /metrics counts each of them by family and reason, keeps the
    /// totals when `nft flush ruleset` recreates the table, and counts reloads.
    @Test func alwaysModeDropsAreCountedExactlyAndSurviveTheTableBeingRecreated() throws {
        try Env.requireReady()
        let lab = try LabNet("always", family: Self.family)
        defer { lab.tearDown() }
        let rules = lab.tempPath("rules.nft")
        try String(contentsOfFile: TestEnvironment.packageDirectory.path + "/nft/reflectguard.nft", encoding: .utf8)
            .write(toFile: rules, atomically: true, encoding: .utf8)
        let agent = try AgentProcess(lab, ["--rules", rules] + InlineAgentTests.protect
                                     + InlineAgentTests.agentOnly + ["--metrics", "\(Self.port)", "-D", "kernel_enforce=always"])
        try lab.resetCounters()

        let synacks = 2_000, rsts = 3_000
        _ = try lab.flood(.synack6, count: synacks, gap: "200us")
        _ = try lab.flood(.rst, count: rsts, gap: "100us")
        // Once every packet has been judged (the agent's queue drained): the counts are still.
        _ = try settled {
            let m = try Self.scrape(agent)
            return [Self.kernelDrops(m, "ipv6", "unsolicited-synack"), Self.kernelDrops(m, "ipv4", "rst-rate-limit"),
                    AgentProcess.value(m, "reflectguard_packets_received_total")]
        }
        let m = try Self.scrape(agent)
        try Self.expectPromtoolClean(m, lab)
        let v6 = Self.kernelDrops(m, "ipv6", "unsolicited-synack")
        let rstDrops = Self.kernelDrops(m, "ipv4", "rst-rate-limit")
        let arrivedRst = Double(try lab.protectedCount("rst"))
        measured("always: \(Int(v6))/\(synacks) IPv6 SYN-ACKs dropped by the kernel; \(Int(rstDrops))/\(rsts) RSTs by the per-address meter, \(Int(arrivedRst)) arrived")
        #expect(v6 == Double(synacks), "every forged IPv6 SYN-ACK counted as a kernel drop")
        #expect(try lab.protectedCount("synack6") == 0)
        let v6Counter = try Self.nftCounter(lab, "drop_unsolicited_synack_v6")
        #expect(v6 == v6Counter)
        let rstCounter = try Self.nftCounter(lab, "drop_rst_rate_limit_v4")
        #expect(rstDrops > 0 && rstDrops == rstCounter)
        // Each RST was dropped by the kernel or judged by the agent (which let its rate through).
        let agentRst = AgentProcess.value(m, "reflectguard_packets_received_total")
        #expect(rstDrops + agentRst >= Double(rsts) * 0.99 && rstDrops + agentRst <= Double(rsts) + 50,
                "kernel \(rstDrops) + agent \(agentRst) against \(rsts) sent")
        #expect(Self.kernelDrops(m, "ipv4", "unsolicited-synack") == 0)

        // The table goes and the watchdog brings it back with counters at 0: the totals stay.
        try lab.exec(lab.router, "nft flush ruleset")
        try agent.waitForLog("\"event\":\"rules-reapplied\"", seconds: 10)
        _ = try lab.flood(.synack6, count: 100, gap: "200us")
        _ = try settled { try Self.nftCounter(lab, "drop_unsolicited_synack_v6") }
        let after = try Self.scrape(agent)
        let recreated = try Self.nftCounter(lab, "drop_unsolicited_synack_v6")
        #expect(recreated == 100, "the recreated table counts from 0")
        #expect(Self.kernelDrops(after, "ipv6", "unsolicited-synack") == Double(synacks + 100), "totals carried over the re-creation")
        #expect(Self.kernelDrops(after, "ipv4", "rst-rate-limit") == rstDrops)

        // A reload that takes and one that is refused.
        agent.signal(SIGHUP)
        try agent.waitForLog("\"event\":\"reload\"", seconds: 10)
        try "table inet reflectguard { broken".write(toFile: rules, atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        try agent.waitForLog("\"event\":\"reload-failed\"", seconds: 10)
        let reloaded = try Self.scrape(agent)
        #expect(AgentProcess.value(reloaded, "reflectguard_reloads_total") == 2)
        #expect(AgentProcess.value(reloaded, "reflectguard_reload_failures_total") == 1)
        #expect(AgentProcess.value(reloaded, "reflectguard_last_reload_successful") == 0)
        let lastSuccess = AgentProcess.value(reloaded, "reflectguard_last_reload_success_timestamp_seconds")
        #expect(abs(lastSuccess - Date().timeIntervalSince1970) < 60)
        #expect(AgentProcess.value(reloaded, "process_resident_memory_bytes") > 1_000_000)
        #expect(AgentProcess.value(reloaded, "process_open_fds") > 3)
        try Self.expectPromtoolClean(reloaded, lab)
        #expect(agent.stop() == 0)
    }

    /// Listen addresses as exporters take them, and the start line names the socket's address.
    @Test func listenAddressesAsExportersTakeThem() throws {
        try Env.requireReady()
        let lab = try LabNet("listen", family: Self.family)
        defer { lab.tearDown() }
        let base = InlineAgentTests.protect + InlineAgentTests.agentOnly
        func start(_ address: String, logs printed: String) throws -> AgentProcess {
            let agent = try AgentProcess(lab, base + ["--metrics", address])
            #expect(agent.log.contains("\"metrics\":\"\(printed)\""), "\(address): \(agent.log.prefix(800))")
            return agent
        }
        func status(_ ns: String, _ url: String) throws -> String {
            try lab.exec(ns, "curl -s -g -o /dev/null -w '%{http_code}' --max-time 3 '\(url)'", check: false).stdout
        }

        // ':PORT': every interface, IPv6 and IPv4, from another namespace too.
        var agent = try start(":\(Self.port)", logs: "[::]:\(Self.port)")
        #expect(try status(lab.inet, "http://198.18.1.1:\(Self.port)/metrics") == "200")
        #expect(try status(lab.inet, "http://[2001:db8:1::1]:\(Self.port)/metrics") == "200")
        #expect(try status(lab.router, "http://127.0.0.1:\(Self.port)/metrics") == "200")
        #expect(agent.stop() == 0)

        // A name is resolved (IPv4 first, as exporters written in Go do); loopback only.
        agent = try start("localhost:\(Self.port)", logs: "127.0.0.1:\(Self.port)")
        #expect(try status(lab.router, "http://127.0.0.1:\(Self.port)/metrics") == "200")
        #expect(try status(lab.inet, "http://198.18.1.1:\(Self.port)/metrics") != "200")
        #expect(agent.stop() == 0)

        agent = try start("[::1]:\(Self.port)", logs: "[::1]:\(Self.port)")
        #expect(try status(lab.router, "http://[::1]:\(Self.port)/metrics") == "200")
        #expect(agent.stop() == 0)

        // PORT alone stays loopback.
        agent = try start("\(Self.port)", logs: "127.0.0.1:\(Self.port)")
        #expect(agent.stop() == 0)

        // A name that does not resolve: exit 1 before any rule is applied; bad syntax: exit 2.
        let unresolved = try lab.exec(lab.router, "\(Env.binary) run \(base.joined(separator: " ")) --metrics no-such-host.invalid:\(Self.port)", check: false)
        #expect(unresolved.status == 1, "\(unresolved.stderr)")
        #expect(unresolved.stderr.contains("no-such-host.invalid"))
        #expect(try lab.exec(lab.router, "nft list table inet reflectguard", check: false).status != 0, "nothing applied")
        for bad in ["::1:9477", "host_name:9477", "[::1]9477", "localhost:99999", ":"] {
            let r = try lab.exec(lab.router, "\(Env.binary) run \(base.joined(separator: " ")) --metrics '\(bad)'", check: false)
            #expect(r.status == 2, "--metrics \(bad): \(r.stderr)")
        }
    }
}
