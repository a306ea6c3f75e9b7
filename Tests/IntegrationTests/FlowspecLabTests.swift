import Foundation
import Testing
import TestSupport

/// BGP Flowspec escalation against a real upstream: the router namespace runs the agent, which
/// runs its own gobgpd; an "upstream" namespace runs BIRD 2 with flow4/flow6 tables, a different
/// BGP implementation, and the test reads what BIRD received. Serialized: floods share the cores.
@Suite(.serialized, .enabled(if: Env.enabled && FlowspecLab.enabled, Comment(rawValue: Env.missing ?? FlowspecLab.missing ?? "")))
struct FlowspecLabTests {
    static let metricsPort = 9518
    static let trigger = 2000
    static let hold = 3.0
    static let withdraw = 6.0

    static func agentArguments(peerAS: Int = 64500, peer: String = "192.0.2.2", metrics: Int = metricsPort) -> [String] {
        ["--protect", "198.18.2.0/24", "--protect", "198.18.3.0/25", "--protect", "198.18.4.0/24", "--protect", "2001:db8:2::/64",
         "-D", "flowspec_peer=\(peer)", "-D", "flowspec_peer_as=\(peerAS)", "-D", "flowspec_local_as=64501",
         "-D", "flowspec_trigger=\(trigger)", "-D", "flowspec_hold=\(Int(hold))s", "-D", "flowspec_withdraw=\(Int(withdraw))s",
         "-D", "flowspec_max_rules=2", "--metrics", "\(metrics)"]
    }

    /// The IPv4 flood comes from port 443 of its reflectors: the route matches that port alone.
    /// The IPv6 one from random ports: no port match.
    static let route4 = "flow4 { dst 198.18.2.0/24; proto 6; sport 443; tcp flags 0x12/0x12; }"
    static let route6 = "flow6 { dst 2001:db8:2::/64; next header 6; tcp flags 0x12/0x12; }"
    /// traffic-rate (RFC 8955 §7.3: type 0x8006, a 2-byte AS of 0, a 32-bit float of bytes/s):
    /// 125000.0 is 0x47f42400.
    static let rate125k = "(generic, 0x80060000, 0x47f42400)"

    @Test func escalatesWithdrawsAndGoesWithTheAgent() throws {
        try Env.requireReady()
        try FlowspecLab.requireReady()
        let lab = try LabNet("fs", family: "rg18")
        let up = try FlowspecLab.Upstream(lab)
        var agent: AgentProcess? = nil
        var directory: String? = nil
        defer {
            if let a = agent {
                let flowspecLines = a.log.split(separator: "\n").filter { $0.contains("flowspec") || $0.contains("attack") }
                print("flowspec lab: agent log\n" + flowspecLines.suffix(40).joined(separator: "\n"))
            }
            if let a = agent, a.process.isRunning { a.signal(SIGKILL) }
            up.tearDown()
            lab.tearDown()
            if let directory { try? FileManager.default.removeItem(atPath: directory) }
        }
        // 198.18.3.0/24 and 198.18.4.0/24 are routed to the protected side, so floods to them
        // cross the router; only 198.18.3.0/25 of the first is protected.
        try lab.exec(lab.router, "ip route add 198.18.3.0/24 via 198.18.2.2")
        try lab.exec(lab.router, "ip route add 198.18.4.0/24 via 198.18.2.2")
        let a = try AgentProcess(lab, Self.agentArguments())
        agent = a
        directory = a.log.firstMatch(of: #/"directory":"([^"]+)"/#).map { String($0.1) }
        try a.waitForLog("\"event\":\"flowspec-session\",\"state\":\"established\"", seconds: 60)

        // Below the trigger (≤ 500 packets/s against 2,000): an attack for the engine, no route.
        _ = try FlowspecLab.flood4(lab, to: "198, 18, 2, drnd()", count: 4000, gap: "2ms")   // 8 s at most 500/s
        Thread.sleep(forTimeInterval: Self.hold + 2)
        #expect(try up.routes("ft4").isEmpty && up.routes("ft6").isEmpty, "no route below the trigger")

        // Above it, IPv4 and IPv6 together, plus 198.18.3.5: protected, but its /24 is not.
        let started = Date()
        // Bounded floods, waited for: trafgen's worker outlives a killed trafgen. 20 s at most 10,000/s.
        let floods = [try FlowspecLab.flood4(lab, to: "198, 18, 2, drnd()", count: 200_000, gap: "100us", background: true),
                      try lab.flood(.synack6, count: 200_000, gap: "100us", background: true, sport: "drnd(2)"),
                      try FlowspecLab.flood4(lab, to: "198, 18, 3, 5", count: 200_000, gap: "100us", background: true)]
        let (r4, r6) = try up.waitForRoutes(seconds: 30)
        let announceDelay = Date().timeIntervalSince(started)
        #expect(r4 == [FlowspecLab.Route(text: Self.route4, community: Self.rate125k)], "exactly the expected IPv4 route")
        #expect(r6 == [FlowspecLab.Route(text: Self.route6, community: Self.rate125k)], "exactly the expected IPv6 route")
        #expect(announceDelay <= Self.hold + 2, "announced \(announceDelay) s after the flood began")
        try a.waitForLog(#""event":"flowspec-announce","route":"\#(Self.route4) traffic-rate 125000""#, seconds: 5)
        #expect(a.log.contains(#""source_ports":["443"],"port_decision":"dominant","port_share":1.000"#), "\(a.log)")
        #expect(a.log.contains(#""source_ports":[],"port_decision":"spread""#), "\(a.log)")
        print("flowspec lab: both routes at the upstream \(String(format: "%.2f", announceDelay)) s after the flood began (hold \(Self.hold) s)")
        try a.waitForLog("\"event\":\"flowspec-refused\",\"prefix\":\"198.18.3.0/24\",\"vector\":\"synack\",\"reason\":\"outside-protected\"", seconds: 10)

        // A third protected prefix past flowspec_max_rules = 2: refused, nothing announced.
        let third = try FlowspecLab.flood4(lab, to: "198, 18, 4, drnd()", count: 100_000, gap: "100us", background: true)
        try a.waitForLog("\"reason\":\"max-rules\"", seconds: Self.hold + 15)
        #expect(try up.routes("ft4").map(\.text) == [Self.route4], "no route past flowspec_max_rules")
        var m = try a.metrics(port: Self.metricsPort)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_session_up") == 1)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_routes_announced") == 2)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_refused_total{reason=\"max-rules\"}") == 1)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_refused_total{reason=\"outside-protected\"}") == 1)
        let shown = try lab.exec(lab.router, "\(Env.binary) flowspec show -D flowspec_peer=192.0.2.2 -D flowspec_peer_as=64500 -D flowspec_local_as=64501").stdout
        #expect(shown.contains("session: 192.0.2.2 AS 64500: established"), "\(shown)")
        #expect(shown.contains("announced: 2") && shown.contains(Self.route4) && shown.contains(Self.route6), "\(shown)")

        // The flood ends: withdrawn once the rate has stayed below the trigger for the timeout.
        for f in floods.prefix(2) { f?.waitUntilExit() }
        let ended = Date()
        try up.waitForNoRoutes(seconds: 30)
        let withdrawDelay = Date().timeIntervalSince(ended)
        print("flowspec lab: withdrawn \(String(format: "%.2f", withdrawDelay)) s after the flood ended (timeout \(Self.withdraw) s)")
        #expect(withdrawDelay >= Self.withdraw - 0.5, "not before the timeout")
        #expect(withdrawDelay <= Self.withdraw + 3, "withdrawn within the timeout (1 s rate window, 1 s ticks)")
        m = try a.metrics(port: Self.metricsPort)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_withdrawals_total") == 2)
        for f in floods + [third] { f?.waitUntilExit() }

        // The speaker dies: restarted, and the routes go in again.
        let again = [try FlowspecLab.flood4(lab, to: "198, 18, 2, drnd()", count: 150_000, gap: "200us", background: true)]
        _ = try up.waitForRoutes(seconds: 30, v6: false)
        let speakerPid = try #require(a.log.matches(of: #/"flowspec-speaker-started","pid":(\d+)/#).last.flatMap { Int32($0.1) })
        kill(speakerPid, SIGKILL)
        try a.waitForLog("\"event\":\"flowspec-speaker-exited\"", seconds: 10)
        try a.waitForLog("\"event\":\"flowspec-resync\"", seconds: 40)
        let back = try up.waitForRoutes(seconds: 30, v6: false).v4
        #expect(back.map(\.text) == [Self.route4], "the route is back after the speaker's restart")
        m = try a.metrics(port: Self.metricsPort)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_speaker_restarts_total") == 1)

        // kill -9 of the agent: its gobgpd goes with it, the session drops, BIRD withdraws.
        let newSpeaker = try #require(a.log.matches(of: #/"flowspec-speaker-started","pid":(\d+)/#).last.flatMap { Int32($0.1) })
        a.signal(SIGKILL)
        let killed = Date()
        a.process.waitUntilExit()
        try up.waitForNoRoutes(seconds: 15)
        let dropDelay = Date().timeIntervalSince(killed)
        print("flowspec lab: withdrawn \(String(format: "%.2f", dropDelay)) s after kill -9 of the agent")
        #expect(dropDelay <= 10)
        // Gone, or a zombie waiting for whoever reaps orphans here (polled, 10 s at most).
        var stat = ""
        let gone = Date().addingTimeInterval(10)
        repeat {
            stat = (try? String(contentsOfFile: "/proc/\(newSpeaker)/stat", encoding: .utf8)) ?? ""
            if stat.isEmpty || stat.contains(") Z ") { break }
            Thread.sleep(forTimeInterval: 0.05)
        } while Date() < gone
        #expect(stat.isEmpty || stat.contains(") Z "), "the agent's gobgpd died with it: \(stat)")
        for f in again { f?.waitUntilExit() }
    }
}

extension FlowspecLabTests {
    /// `--dry-run` prints the routes it would announce and starts no speaker: the upstream
    /// never hears of them.
    @Test func dryRunPrintsTheRoutesAndAnnouncesNothing() throws {
        try Env.requireReady()
        try FlowspecLab.requireReady()
        let lab = try LabNet("fsdry", family: "rg18")
        let up = try FlowspecLab.Upstream(lab)
        defer { up.tearDown(); lab.tearDown() }
        let a = try AgentProcess(lab, Self.agentArguments(metrics: 9521) + ["--dry-run"])
        _ = try FlowspecLab.flood4(lab, to: "198, 18, 2, drnd()", count: 50_000, gap: "100us")
        try a.waitForLog("\"event\":\"flowspec-would-announce\"", seconds: 20)
        #expect(a.stop() == 0)
        #expect(a.output.contains("flowspec: would announce \(Self.route4) traffic-rate 125000"), "\(a.output)")
        #expect(!a.log.contains("flowspec-speaker-started"))
        #expect(try up.routes("ft4").isEmpty && up.routes("ft6").isEmpty)
    }
}

extension FlowspecLabTests {
    /// A reload (SIGHUP or `reflectguard reload`) applies a changed Flowspec policy before it
    /// answers: a prefix no longer protected is withdrawn at the upstream, a new action replaces
    /// the standing route in place; a change of the session itself is refused and changes nothing.
    @Test func reloadAppliesTheFlowspecPolicy() throws {
        try Env.requireReady()
        try FlowspecLab.requireReady()
        let lab = try LabNet("fsrl", family: "rg18")
        let up = try FlowspecLab.Upstream(lab)
        var agent: AgentProcess? = nil
        defer {
            if let a = agent {
                print("flowspec reload lab: agent log\n" + a.log.split(separator: "\n").filter { $0.contains("flowspec") || $0.contains("reload") }
                    .suffix(30).joined(separator: "\n"))
                if a.process.isRunning { a.signal(SIGKILL) }
            }
            up.tearDown()
            lab.tearDown()
        }
        try lab.exec(lab.router, "ip route add 198.18.4.0/24 via 198.18.2.2")
        let config = lab.tempPath("reflectguard.conf")
        func write(protected: String, rate: Int, peerAS: Int = 64500) throws {
            try """
                define protected_v4 = { \(protected) }
                define flowspec_peer = 192.0.2.2
                define flowspec_peer_as = \(peerAS)
                define flowspec_local_as = 64501
                define flowspec_trigger = \(Self.trigger)
                define flowspec_hold = \(Int(Self.hold))s
                define flowspec_withdraw = 60s
                define flowspec_rate = \(rate)

                """.write(toFile: config, atomically: true, encoding: .utf8)
        }
        try write(protected: "198.18.2.0/24, 198.18.4.0/24", rate: 125_000)
        let a = try AgentProcess(lab, ["--config", config, "--metrics", "9522"])
        agent = a
        try a.waitForLog("\"event\":\"flowspec-session\",\"state\":\"established\"", seconds: 60)
        // Two prefixes flooded from port 443 (40 s at most, 5,000/s each): two routes.
        let floods = [try FlowspecLab.flood4(lab, to: "198, 18, 2, drnd()", count: 200_000, gap: "200us", background: true),
                      try FlowspecLab.flood4(lab, to: "198, 18, 4, drnd()", count: 200_000, gap: "200us", background: true)]
        defer { for f in floods { f?.waitUntilExit() } }
        let route2 = "flow4 { dst 198.18.2.0/24; proto 6; sport 443; tcp flags 0x12/0x12; }"
        let route4 = "flow4 { dst 198.18.4.0/24; proto 6; sport 443; tcp flags 0x12/0x12; }"
        let deadline = Date().addingTimeInterval(30)
        while try up.routes("ft4").count < 2, Date() < deadline { usleep(100_000) }
        // BIRD lists a flow table in its own order.
        let both = try up.routes("ft4").sorted { $0.text < $1.text }
        #expect(both == [FlowspecLab.Route(text: route2, community: Self.rate125k),
                         FlowspecLab.Route(text: route4, community: Self.rate125k)], "\(both)")

        // A change of the session: refused, nothing withdrawn or replaced.
        try write(protected: "198.18.2.0/24", rate: 0, peerAS: 64999)
        let refused = try lab.exec(lab.router, "\(Env.binary) reload", check: false)
        #expect(refused.status != 0 && refused.stderr.contains("restart the agent to change the Flowspec session"), "\(refused.stderr)")
        #expect(try up.routes("ft4").count == 2)

        // 198.18.4.0/24 no longer protected, discard instead of traffic-rate: when the reload
        // answers, the agent has withdrawn the one and replaced the other.
        try write(protected: "198.18.2.0/24", rate: 0)
        let reloaded = try lab.exec(lab.router, "\(Env.binary) reload")
        #expect(reloaded.stdout.contains("flowspec: 1 route(s) announced, 1 withdrawn, 1 replaced"), "\(reloaded.stdout)")
        let settled = Date().addingTimeInterval(5)
        var now = try up.routes("ft4")
        while now.count != 1 || now.first?.community == Self.rate125k, Date() < settled {
            usleep(100_000)
            now = try up.routes("ft4")
        }
        // discard: traffic-rate 0.0.
        #expect(now == [FlowspecLab.Route(text: route2, community: "(generic, 0x80060000, 0x0)")], "\(now)")
        try a.waitForLog(#""event":"flowspec-withdraw","route":"\#(route4) traffic-rate 125000","prefix":"198.18.4.0/24","vector":"synack","reason":"reload: outside the protected networks""#, seconds: 5)
        try a.waitForLog(#""event":"flowspec-replace","route":"\#(route2) discard""#, seconds: 5)
        let shown = try lab.exec(lab.router, "\(Env.binary) flowspec show -D flowspec_peer=192.0.2.2 -D flowspec_peer_as=64500 -D flowspec_local_as=64501").stdout
        #expect(shown.contains("announced: 1\n  \(route2) discard\n"), "\(shown)")
        let m = try a.metrics(port: 9522)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_routes_announced") == 1)
        #expect(a.stop() == 0)
    }
}

/// Bad configurations: a clear event and metric, and the flood is still cut locally.
@Suite(.serialized, .enabled(if: Env.enabled && FlowspecLab.enabled, Comment(rawValue: Env.missing ?? FlowspecLab.missing ?? "")))
struct FlowspecBadConfigTests {
    /// Local protection: a spoofed SYN-ACK flood does not reach the protected host.
    static func protectionHolds(_ lab: LabNet) throws {
        try lab.resetCounters()
        _ = try lab.flood(.synack, count: 3000, gap: "200us")
        Thread.sleep(forTimeInterval: 0.5)
        let reached = try lab.protectedCount("synack")
        #expect(reached <= 300, "\(reached) of 3000 forged SYN-ACKs reached the protected host")
    }

    @Test func wrongASIsReportedAndProtectionHolds() throws {
        try Env.requireReady()
        try FlowspecLab.requireReady()
        let lab = try LabNet("fsas", family: "rg18")
        let up = try FlowspecLab.Upstream(lab)
        defer { up.tearDown(); lab.tearDown() }
        let a = try AgentProcess(lab, FlowspecLabTests.agentArguments(peerAS: 64999, metrics: 9519))
        defer { _ = a.stop() }
        try Self.protectionHolds(lab)
        try a.waitForLog("\"event\":\"flowspec-session-down\"", seconds: 60)
        let m = try a.metrics(port: 9519)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_session_up") == 0)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_session_failures_total") == 1)
        #expect(try up.routes("ft4").isEmpty)
    }

    @Test func unreachablePeerAndMissingSpeaker() throws {
        try Env.requireReady()
        try FlowspecLab.requireReady()
        let lab = try LabNet("fsbad", family: "rg18")
        defer { lab.tearDown() }
        // gobgpd hidden in a mount namespace of the agent's own: /dev/null bound over it.
        let hide = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    "mount --bind /dev/null \(FlowspecLab.gobgpd!) && exec \"$0\" \"$@\""]
        var a = try AgentProcess(lab, FlowspecLabTests.agentArguments(metrics: 9520), launcher: hide)
        try a.waitForLog("\"event\":\"flowspec-speaker-missing\"", seconds: 10)
        var m = try a.metrics(port: 9520)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_errors_total") >= 1)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_speaker_running") == 0)
        try Self.protectionHolds(lab)
        #expect(a.stop() == 0)

        // Nobody at the peer's address (no route to it).
        a = try AgentProcess(lab, FlowspecLabTests.agentArguments(peer: "203.0.113.99", metrics: 9520))
        defer { _ = a.stop() }
        try Self.protectionHolds(lab)
        try a.waitForLog("\"event\":\"flowspec-session-down\"", seconds: 60)
        m = try a.metrics(port: 9520)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_session_up") == 0)
        #expect(AgentProcess.value(m, "reflectguard_flowspec_session_failures_total") == 1)
    }
}

/// The upstream namespace with BIRD, and the floods these tests need.
enum FlowspecLab {
    static let gobgpd = TestEnvironment.which("gobgpd")
    static let missing: String? = {
        for t in ["gobgpd", "gobgp", "bird", "birdc", "unshare", "curl"] where TestEnvironment.which(t) == nil {
            return "needs '\(t)' (scripts/setup.sh installs gobgpd and bird2)"
        }
        return nil
    }()
    static var enabled: Bool { missing == nil || TestEnvironment.isCI }
    static func requireReady() throws {
        if let m = missing { try #require(Bool(false), "flowspec lab prerequisites: \(m)") }
    }

    struct Route: Equatable, CustomStringConvertible {
        var text: String
        var community: String
        var description: String { "\(text) \(community)" }
    }

    /// SYN-ACKs from port 443 of random 198.19.0.0/16 reflectors to `to` (trafgen bytes, e.g.
    /// "198, 18, 2, drnd()").
    static func flood4(_ lab: LabNet, to: String, count: Int, gap: String, background: Bool = false) throws -> Process? {
        let dst = lab.routerMAC.split(separator: ":").map { "0x\($0)" }.joined(separator: ", ")
        let src = lab.inetMAC.split(separator: ":").map { "0x\($0)" }.joined(separator: ", ")
        let config = """
            {
              \(dst), \(src), 0x08, 0x00,
              0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
              198, 19, drnd(), drnd(), \(to),
              const16(443), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp(14, 34), const16(0),
            }
            """
        return try lab.runTrafgen(config, count: count, gap: gap, background: background)
    }

    /// A namespace `PREFIX-up` linked to the router (192.0.2.1 there, 192.0.2.2 here), running
    /// BIRD as AS 64500 with flow4/flow6 tables that take every Flowspec route from AS 64501.
    final class Upstream {
        let ns: String
        let dir: String
        let lab: LabNet

        init(_ lab: LabNet) throws {
            self.lab = lab
            ns = "\(lab.prefix)-up"
            dir = NSTemporaryDirectory() + "\(lab.prefix)-bird"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try sh("ip netns add \(ns)")
            // Both ends made inside their namespaces: a name in the host's namespace, even one
            // built from the pid, is shared with every other lab of this process running beside it.
            try sh("ip link add up0 netns \(lab.router) type veth peer name up1 netns \(ns)")
            try sh("ip -n \(lab.router) addr add 192.0.2.1/30 dev up0 && ip -n \(lab.router) link set up0 up")
            try sh("ip -n \(ns) addr add 192.0.2.2/30 dev up1 && ip -n \(ns) link set up1 up && ip -n \(ns) link set lo up")
            let conf = """
                router id 192.0.2.2;
                protocol device {}
                flow4 table ft4;
                flow6 table ft6;
                protocol bgp router1 {
                  local 192.0.2.2 as 64500;
                  neighbor 192.0.2.1 as 64501;
                  connect delay time 1;
                  connect retry time 2;
                  error wait time 1, 5;
                  flow4 { table ft4; import all; export none; };
                  flow6 { table ft6; import all; export none; };
                }
                """
            try conf.write(toFile: "\(dir)/bird.conf", atomically: true, encoding: .utf8)
            // In the foreground, as the lab's child (killed at tear-down): a BIRD that forks into
            // the background keeps whatever descriptors it inherited, a parallel test's pipes too.
            _ = try lab.spawn(ns, ["bird", "-f", "-c", "\(dir)/bird.conf", "-s", "\(dir)/bird.ctl"])
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: "\(dir)/bird.ctl") { usleep(50_000) }
        }

        func tearDown() {
            _ = try? sh("ip netns del \(ns)", check: false)
            try? FileManager.default.removeItem(atPath: dir)
        }

        /// The routes in a BIRD table with their extended communities.
        func routes(_ table: String) throws -> [Route] {
            let out = try sh("birdc -s \(dir)/bird.ctl show route table \(table) all").stdout
            var routes: [Route] = []
            for line in out.split(separator: "\n") {
                if line.hasPrefix("flow4 {") || line.hasPrefix("flow6 {"), let close = line.firstIndex(of: "}") {
                    routes.append(Route(text: String(line[...close]), community: ""))
                } else if let r = line.firstRange(of: "BGP.ext_community: "), !routes.isEmpty {
                    routes[routes.count - 1].community = String(line[r.upperBound...])
                }
            }
            return routes
        }

        func waitForRoutes(seconds: Double, v6: Bool = true) throws -> (v4: [Route], v6: [Route]) {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let r4 = try routes("ft4"), r6 = v6 ? try routes("ft6") : []
                if !r4.isEmpty && (!v6 || !r6.isEmpty) { return (r4, r6) }
                usleep(100_000)
            }
            throw HarnessError("no Flowspec route at the upstream after \(seconds) s (ft4: \(try routes("ft4")), ft6: \(try routes("ft6")))")
        }

        func waitForNoRoutes(seconds: Double) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if try routes("ft4").isEmpty && routes("ft6").isEmpty { return }
                usleep(100_000)
            }
            throw HarnessError("Flowspec routes still at the upstream after \(seconds) s: \(try routes("ft4")) \(try routes("ft6"))")
        }
    }
}
