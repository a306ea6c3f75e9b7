import Foundation
import Testing
@testable import Rules
import VerdictEngine

/// The rules file as the one source of truth: what the policy reads, what nft gets, and errors
/// with positions. No privileges needed.
@Suite struct RulesConfigTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func embeddedRulesetIsTheFileInTheRepository() throws {
        let onDisk = try String(contentsOf: Self.repo.appendingPathComponent("nft/reflectguard.nft"), encoding: .utf8)
        #expect(RulesFile.embedded.text == onDisk, "run scripts/embed-rules.sh after editing nft/reflectguard.nft")
    }

    @Test func embeddedDefaultProtectsNothing() throws {
        let r = try RulesConfig.resolve(rules: .embedded)
        #expect(r.policy.protected.isEmpty)
        #expect(r.policy.allowlist.isEmpty)
        #expect(r.policy == Policy())   // the file's defaults are Policy's defaults
        #expect(r.queues == QueueRange(first: 0, last: 0))
        #expect(r.queueMark == 0x1000_0000)
    }

    @Test func policyReadFromTheFileIsThePolicyUsed() throws {
        let text = """
            # test file
            define protected_v4 = { 198.18.2.0/24, 203.0.113.7 }
            define protected_v6 = {
                2001:db8:2::/64,   # lab
                2001:db8:3::1
            }
            define allowlist_v4 = { 192.0.2.1 }
            define inside_ifaces = { "veth-in" }
            define queues = 2-5
            define mode = ingress-only
            define track = full
            define ephemeral_ports = 1024-65535
            define rst_rate = 7
            define rst_burst = 9
            define syn_horizon = 2m11s
            define synack_horizon = 500ms
            define score_threshold = 42
            table inet reflectguard {
            }
            """
        let r = try RulesConfig.resolve(rules: RulesFile(name: "t.nft", text: text))
        var want = Policy()
        want.protected = PrefixSet([CIDR("198.18.2.0/24")!, CIDR("203.0.113.7")!, CIDR("2001:db8:2::/64")!,
                                    CIDR("2001:db8:3::1")!])
        want.allowlist = PrefixSet([CIDR("192.0.2.1")!])
        want.insideInterfaces = ["veth-in"]
        want.queueCount = 4
        want.mode = .ingressOnly
        want.track = .full
        want.ephemeralPorts = 1024...65535
        want.rstRate = 7
        want.rstBurst = 9
        want.synHorizon = 131
        want.synackHorizon = 0.5
        want.scoreThreshold = 42
        #expect(r.policy == want)
        #expect(r.queues == QueueRange(first: 2, last: 5))
    }

    @Test func overridesReachBothPolicyAndText() throws {
        let r = try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24", "2001:db8:2::/64"],
                                        defines: ["track=full", "queue=0:3", "rst_rate=70", "kernel_enforce=always"])
        #expect(r.policy.protected.contains(CIDR("198.18.2.9")!.address))
        #expect(r.policy.protected.contains(CIDR("2001:db8:2::9")!.address))
        #expect(r.policy.track == .full)
        #expect(r.policy.queueCount == 4)
        #expect(r.policy.rstRate == 70)
        let original = RulesFile.embedded.text.split(separator: "\n", omittingEmptySubsequences: false)
        for backend in Backend.allCases {
            for hook in Hook.allCases {
                let text = r.render(hook: hook, backend: backend)
                let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                // Line for line: nft's error positions are the operator's.
                #expect(lines.count == original.count)
                #expect(text.contains("define protected_v4 = { 198.18.2.0/24 }"))
                #expect(text.contains("define protected_v6 = { 2001:db8:2::/64 }"))
                #expect(text.contains("elements = $protected_v4"))
                #expect(text.contains("limit rate over 70/second burst 100 packets"))
                #expect(text.contains("timeout 131s"))
                #expect(!text.contains("$rst_rate"))
                if backend == .none {
                    #expect(text.contains("jump always"))
                } else {
                    #expect(text.contains("jump full"))
                }
                #expect(text.contains("queue num 0-3 bypass") == (backend == .nft))
                #expect(text.contains("meta mark set meta mark | 0x10000000") == (backend == .xt))
                #expect(text.contains("chain router_forward") == (hook == .router))
                #expect(text.contains("chain host_input") == (hook == .host))
                #expect(text.contains("chain host_output") == (hook == .host))
                // Exactly one enqueue chain survives.
                #expect(text.components(separatedBy: "chain enqueue {").count == 2)
            }
        }
    }

    @Test func configuredSetsAreThoseTheFileFills() throws {
        let r = try RulesConfig.resolve(rules: .embedded)
        #expect(r.configuredSets == ["protected4", "protected6", "allowlist4", "allowlist6", "track_full_ports", "track_full4", "track_full6"])
    }

    @Test func kernelOnlyForcesAlwaysAndQueuesNothing() throws {
        let r = try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24"])
        let text = r.render(hook: .router, backend: .none)
        #expect(text.contains("define kernel_enforce = always"))
        #expect(text.contains("jump always"))
        #expect(!text.contains("queue num"))
        #expect(!text.contains("meta mark set"))
        #expect(r.policy.protected.contains(CIDR("198.18.2.200")!.address))
    }

    @Test func xtablesRulesQueueMarkedPacketsWithBypassAndSymmetricBalance() throws {
        let one = try RulesConfig.resolve(rules: .embedded)
        #expect(one.xtablesRules(hook: .router).map(\.commandLine) == [
            "iptables-nft -t mangle -I FORWARD 1 -m mark --mark 0x10000000/0x10000000 -m comment --comment reflectguard -j NFQUEUE --queue-num 0 --queue-bypass",
            "ip6tables-nft -t mangle -I FORWARD 1 -m mark --mark 0x10000000/0x10000000 -m comment --comment reflectguard -j NFQUEUE --queue-num 0 --queue-bypass",
        ])
        let range = try RulesConfig.resolve(rules: .embedded, defines: ["queue=2:3"])
        let host = range.xtablesRules(hook: .host)
        #expect(host.map(\.chain) == ["INPUT", "OUTPUT", "INPUT", "OUTPUT"])
        #expect(host.allSatisfy { $0.arguments.suffix(3) == ["--queue-balance", "2:3", "--queue-bypass"] })
    }

    @Test(arguments: [
        ("define protected_v4 = { 198.18.2.0/33 }\n", 1, 25, "198.18.2.0/33"),
        ("# c\ndefine protected_v4 = { 198.18.2.0/24, 2001:db8::/32 }\n", 2, 40, "2001:db8::/32"),
        ("define mode = sideways\n", 1, 15, "sideways"),
        ("define rst_rate = 1.5\n", 1, 19, "1.5"),
        ("\n\ndefine syn_horizon = 10parsecs\n", 3, 22, "10parsecs"),
        ("define queues = 3-1\n", 1, 17, "3-1"),
        ("define track = all\n", 1, 16, "all"),
        ("define protected_v4 = { 1.2.3.4\n", 1, 23, "unterminated"),
    ])
    func badValuesAreErrorsWithLineAndColumn(text: String, line: Int, column: Int, quoted: String) {
        do {
            _ = try RulesConfig.resolve(rules: RulesFile(name: "bad.nft", text: text))
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.location == SourceLocation(file: "bad.nft", line: line, column: column), "\(error)")
            #expect(error.description.hasPrefix("bad.nft:\(line):\(column): error: "))
            #expect(error.message.contains(quoted))
            #expect(!error.fromCommandLine)
        }
    }

    @Test(arguments: [
        ([], ["nosuch=1"]),
        ([], ["novalue"]),
        (["198.18.2.0/99"], []),
        ([], ["rst_rate=1;flush ruleset"]),
    ])
    func badOverridesAreUsageErrors(protect: [String], defines: [String]) {
        do {
            _ = try RulesConfig.resolve(rules: .embedded, protect: protect, defines: defines)
            Issue.record("accepted \(protect) \(defines)")
        } catch {
            #expect(error.fromCommandLine, "\(error)")
            #expect(error.location == nil)
        }
    }

    @Test func multiLineOverrideKeepsLineNumbers() throws {
        let text = "define protected_v4 = {\n  198.18.2.0/24,\n  198.18.3.0/24\n}\ndefine mode = symmetric\n"
        let r = try RulesConfig.resolve(rules: RulesFile(name: "m.nft", text: text), defines: ["protected_v4=198.18.9.0/24"])
        #expect(r.text == "define protected_v4 = { 198.18.9.0/24 }\n\n\n\ndefine mode = symmetric\n")
        #expect(r.policy.protected.prefixes == [CIDR("198.18.9.0/24")!])
    }

    @Test func aSetOverrideWithoutBracesStaysASet() throws {
        let r = try RulesConfig.resolve(rules: .embedded, defines: ["protected_v4=198.18.2.0/24", "allowlist_v6=2001:db8:9::1"])
        let text = r.render(hook: .router, backend: .xt)
        #expect(text.contains("define protected_v4 = { 198.18.2.0/24 }"))
        #expect(text.contains("define allowlist_v6 = { 2001:db8:9::1 }"))
        #expect(text.contains("elements = $protected_v4"))
        #expect(r.policy.protected.prefixes == [CIDR("198.18.2.0/24")!])
    }

    @Test func columnsMapBackAcrossExpandedDefines() throws {
        let text = "define r = 12345\ndefine s = 7\ntable inet reflectguard { chain c { limit rate over $r/second burst $s packets x; } }\n"
        let r = try RulesConfig.resolve(rules: RulesFile(name: "c.nft", text: text))
        let rendered = r.renderMapped(hook: .router, backend: .xt)
        let line = String(rendered.text.split(separator: "\n")[2])
        #expect(line == "table inet reflectguard { chain c { limit rate over 12345/second burst 7 packets x; } }")
        let original = String(text.split(separator: "\n")[2])
        func col(_ s: String, _ needle: String) -> Int {
            s.utf8.distance(from: s.startIndex, to: s.range(of: needle)!.lowerBound) + 1
        }
        // Before, inside and after the expansions.
        #expect(rendered.originalColumn(line: 3, column: col(line, "limit")) == col(original, "limit"))
        #expect(rendered.originalColumn(line: 3, column: col(line, "2345")) == col(original, "$r"))
        #expect(rendered.originalColumn(line: 3, column: col(line, "/second")) == col(original, "/second"))
        #expect(rendered.originalColumn(line: 3, column: col(line, "x;")) == col(original, "x;"))
        #expect(rendered.originalColumn(line: 1, column: 5) == 5)
    }

    @Test func durations() throws {
        let any: ClosedRange<UInt64> = 0...UInt64.max
        #expect(try NftValue.milliseconds("131s", in: any) == 131_000)
        #expect(try NftValue.milliseconds("2m11s", in: any) == 131_000)
        #expect(try NftValue.milliseconds("1h", in: any) == 3_600_000)
        #expect(try NftValue.milliseconds("250ms", in: any) == 250)
        #expect(try NftValue.milliseconds("1d1h1m1s1ms", in: any) == 90_061_001)
        // nft's time syntax: a unit on every number, d h m s ms in that order, each once.
        for bad in ["s", "5x", "60", "5", "1s1m", "1s1s", "1.5s", "1S", "", "-1s", "+1s", "1m 1s"] {
            #expect(throws: ValueError.self, "\(bad)") { try NftValue.milliseconds(bad, in: any) }
        }
    }

    /// Guarded flows and the learnt RST budgets: read into the policy, and refused out of range
    /// as a rules error like every define of the table.
    @Test func guardedFlowsAndRSTBudgets() throws {
        let r = try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24"],
                                        defines: ["track_full_ports={ 179, 5432-5433 }", "track_full_hosts_v4={ 203.0.113.0/28 }",
                                                  "track_full_hosts_v6={ 2001:db8:1::9 }", "rst_attack_floor=80",
                                                  "rst_warmup=5s", "established_horizon=2h"])
        #expect(r.policy.trackFullPorts == [179...179, 5432...5433])
        #expect(r.policy.trackFullHosts.contains(CIDR("203.0.113.7")!.address))
        #expect(r.policy.trackFullHosts.contains(CIDR("2001:db8:1::9")!.address))
        #expect(r.policy.rstAttackFloor == 80 && r.policy.rstWarmup == 5 && r.policy.establishedHorizon == 7200)
        #expect(try NftValue.portSet("{ }") == [])
        for bad in ["{ 0 }", "{ 65536 }", "{ 179, 99-80 }", "{ 0179 }", "{ http }"] {
            #expect(throws: ValueError.self, "\(bad)") { try NftValue.portSet(bad) }
            #expect(throws: RulesError.self, "\(bad)") {
                try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24"], defines: ["track_full_ports=\(bad)"])
            }
        }
        #expect(throws: RulesError.self) {
            try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24"], defines: ["rst_attack_factor=0"])
        }
    }
}
