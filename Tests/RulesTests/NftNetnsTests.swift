import Foundation
import Testing
import PacketParser
import Rules
import VerdictEngine
import TestSupport

/// Real nft in fresh network namespaces: the generated rulesets load, only intended packets are
/// queued, broken rules change nothing, remove touches only ReflectGuard's objects, and the
/// kernel-only ruleset stops a spoofed SYN-ACK flood while real connections work.
@Suite(.serialized) struct NftNetnsTests {
    static let protect = ["--protect", "198.18.2.0/24", "--protect", "2001:db8:2::/64"]

    @Test(arguments: Hook.allCases)
    func generatedRulesetsLoadWithTheXtablesBackend(hook: Hook) throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-load-\(hook.rawValue)"])
        let ns = n.names[0]
        let apply = ["nft", "apply", "--backend", "xt", "--hook", hook.rawValue] + Self.protect
        let first = n.reflectguard(ns, apply)
        #expect(first.status == 0, "\(first.stderr)")
        let listing = try n.must(ns, ["nft", "list", "ruleset"]).stdout
        #expect(listing.contains("table inet reflectguard"))
        #expect(listing.contains("elements = { 198.18.2.0/24 }"))
        #expect(listing.contains("elements = { 2001:db8:2::/64 }"))
        #expect(listing.contains("meta mark set meta mark | 0x10000000"))
        let chains = hook == .router ? ["FORWARD"] : ["INPUT", "OUTPUT"]
        #expect(listing.contains(hook == .router ? "chain router_forward" : "chain host_input"))
        #expect(!listing.contains(hook == .router ? "chain host_input" : "chain router_forward"))

        // Applying again (another queue range) replaces chains and the xtables rule but keeps the
        // contents of the sets the agent manages.
        try n.must(ns, ["nft", "add", "element", "inet", "reflectguard", "armed4", "{ 198.18.2.0/25 timeout 5m }"])
        let again = n.reflectguard(ns, apply + ["--queue", "0:1"])
        #expect(again.status == 0, "\(again.stderr)")
        let relisted = try n.must(ns, ["nft", "list", "set", "inet", "reflectguard", "armed4"]).stdout
        #expect(relisted.contains("198.18.2.0/25"))
        for tool in ["iptables-nft", "ip6tables-nft"] {
            let rules = try n.must(ns, [tool, "-t", "mangle", "-S"]).stdout.split(separator: "\n").filter { $0.contains("reflectguard") }
            #expect(rules.count == chains.count, "\(tool): \(rules)")
            for c in chains {
                #expect(rules.contains { $0.hasPrefix("-A \(c) ") && $0.contains("--queue-balance 0:1 --queue-bypass") })
            }
        }
        let table = try n.must(ns, ["nft", "list", "table", "inet", "reflectguard"]).stdout
        #expect(table.components(separatedBy: "chain classify {").count == 2, "chains duplicated on reload")

        // A network taken out of the file leaves the kernel on reload (the engine no longer
        // protects it, so the kernel must not queue for it); the armed victims stay.
        let fewer = n.reflectguard(ns, ["nft", "apply", "--backend", "xt", "--hook", hook.rawValue,
                                        "--protect", "198.18.3.0/24"])
        #expect(fewer.status == 0, "\(fewer.stderr)")
        let protected4 = try n.must(ns, ["nft", "list", "set", "inet", "reflectguard", "protected4"]).stdout
        #expect(protected4.contains("198.18.3.0/24") && !protected4.contains("198.18.2.0/24"), "\(protected4)")
        #expect(!(try n.must(ns, ["nft", "list", "set", "inet", "reflectguard", "protected6"]).stdout.contains("2001:db8:2::")))
        #expect(try n.must(ns, ["nft", "list", "set", "inet", "reflectguard", "armed4"]).stdout.contains("198.18.2.0/25"))
    }

    @Test(arguments: Hook.allCases)
    func nftBackendTextLoadsWithQueueSwappedForAccept(hook: Hook) throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-nftb-\(hook.rawValue)"])
        let ns = n.names[0]
        let gen = n.reflectguard(ns, ["nft", "generate", "--backend", "nft", "--hook", hook.rawValue, "--queue", "0:3"]
                                    + Self.protect)
        #expect(gen.status == 0, "\(gen.stderr)")
        #expect(gen.stdout.contains("queue num 0-3 bypass"))
        let swapped = gen.stdout.replacingOccurrences(of: "queue num 0-3 bypass", with: "accept")
        let path = TestEnvironment.temporaryPath("rgt-rules-nftb.nft")
        try swapped.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let load = n.exec(ns, ["nft", "-f", path])
        #expect(load.status == 0, "\(load.stderr)")
        #expect(try n.must(ns, ["nft", "list", "chain", "inet", "reflectguard", "enqueue"]).stdout.contains("accept"))
    }

    /// `--backend auto` picks what the kernel has (here: no nft queue expression, so xt), and
    /// the probe leaves nothing behind.
    @Test func autoBackendFollowsTheKernel() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-probe"])
        let ns = n.names[0]
        let hasQueue = n.exec(ns, ["nft", "-c", "add table inet p; add chain inet p c { type filter hook forward priority 0; }; add rule inet p c queue num 0 bypass"]).status == 0
        let auto = n.reflectguard(ns, ["nft", "generate"])
        #expect(auto.status == 0, "\(auto.stderr)")
        #expect(auto.stdout.contains("queue num 0 bypass") == hasQueue)
        #expect(auto.stdout.contains("meta mark set meta mark") == !hasQueue)
        #expect(try n.must(ns, ["nft", "list", "ruleset"]).stdout.isEmpty)
    }

    /// Three broken files: each exits 3 with FILE:LINE:COL and leaves the ruleset byte-for-byte.
    @Test func brokenRulesExit3AndChangeNothing() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-broken"])
        let ns = n.names[0]
        try n.must(ns, ["nft", "add table inet foreign; add chain inet foreign c { type filter hook input priority 0; }; add rule inet foreign c tcp dport 22 accept"])
        let ok = n.reflectguard(ns, ["nft", "apply", "--backend", "xt"] + Self.protect)
        #expect(ok.status == 0, "\(ok.stderr)")
        let before = try n.must(ns, ["nft", "list", "ruleset"]).stdout
        let base = RulesFile.embedded.text
        let lines = base.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func lineNumber(_ needle: String) -> Int { lines.firstIndex { $0.contains(needle) }! + 1 }
        let cases: [(String, String, String, Int, String)] = [
            ("syntax", "\t\tjump kernel_check", "\t\tjump kernel_check oops", lineNumber("jump kernel_check"), "syntax error"),
            ("unknown-set", "\t\tip saddr @allowlist4 return", "\t\tip saddr @nosuch4 return",
             lineNumber("ip saddr @allowlist4 return"), "No such file or directory"),
            ("bad-cidr-rule", "\t\tip daddr @allowlist4 return", "\t\tip daddr 198.18.2.0/33 return",
             lineNumber("ip daddr @allowlist4 return"), "Prefix length"),
            ("bad-cidr-define", "define allowlist_v4 = { }", "define allowlist_v4 = { 198.18.300.0/24 }",
             lineNumber("define allowlist_v4"), "198.18.300.0/24"),
            // After expanded defines on the same line: the column is still the operator's.
            ("after-expansion", "ip daddr limit rate over $rst_rate/second burst $rst_burst packets } counter",
             "ip daddr limit rate over $rst_rate/second burst $rst_burst packets } ip daddr @nosuch4 counter",
             lineNumber("ip daddr limit rate over $rst_rate/second burst $rst_burst packets }"), "No such file"),
        ]
        for (name, from, to, line, says) in cases {
            let text = base.replacingOccurrences(of: from, with: to)
            #expect(text != base)
            let path = TestEnvironment.temporaryPath("rgt-rules-\(name).nft")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            for action in ["check", "apply"] {
                let r = n.reflectguard(ns, ["nft", action, "--backend", "xt", "--rules", path] + Self.protect)
                #expect(r.status == 3, "\(name) \(action): \(r.status) \(r.stderr)")
                #expect(r.stderr.contains("\(path):\(line):"), "\(name): \(r.stderr)")
                if name == "after-expansion" {
                    let source = text.split(separator: "\n", omittingEmptySubsequences: false)[line - 1]
                    let column = source.utf8.distance(from: source.startIndex, to: source.range(of: "@nosuch4")!.lowerBound) + 1
                    #expect(r.stderr.contains("\(path):\(line):\(column)-\(column + 7): Error: No such file"),
                            "\(r.stderr)")
                }
                #expect(r.stderr.contains(says), "\(name): \(r.stderr)")
                let after = try n.must(ns, ["nft", "list", "ruleset"]).stdout
                #expect(after == before, "\(name) \(action) changed the ruleset")
            }
        }
    }

    @Test func removeLeavesForeignTablesAndRulesIntact() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-rules-remove"])
        let ns = n.names[0]
        try n.must(ns, ["nft", "add table inet foreign; add chain inet foreign c { type filter hook forward priority 0; }; add rule inet foreign c tcp dport 22 accept"])
        try n.must(ns, ["iptables-nft", "-A", "FORWARD", "-s", "192.0.2.1", "-m", "comment", "--comment", "operator", "-j", "ACCEPT"])
        let apply = n.reflectguard(ns, ["nft", "apply", "--backend", "xt"] + Self.protect)
        #expect(apply.status == 0, "\(apply.stderr)")
        let remove = n.reflectguard(ns, ["nft", "remove"])
        #expect(remove.status == 0, "\(remove.stderr)")
        let listing = try n.must(ns, ["nft", "list", "ruleset"]).stdout
        #expect(!listing.contains("table inet reflectguard"))
        #expect(listing.contains("table inet foreign"))
        #expect(listing.contains("tcp dport 22 accept"))
        let xt = try n.must(ns, ["iptables-nft", "-S", "FORWARD"]).stdout
        #expect(xt.contains("--comment operator"))
        #expect(!xt.contains("reflectguard"))
        for tool in ["iptables-nft", "ip6tables-nft"] {
            #expect(!(try n.must(ns, [tool, "-t", "mangle", "-S"]).stdout.contains("reflectguard")))
        }
        // Removing twice is fine.
        #expect(n.reflectguard(ns, ["nft", "remove"]).status == 0)
    }

    /// Packets through a router namespace: the xtables NFQUEUE rule's counters show which ones
    /// the rules queue (no agent listens: bypass lets them pass).
    @Test func packetWalkQueuesOnlyIntendedPackets() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        guard TestEnvironment.which("python3") != nil else { TestEnvironment.unavailable("python3 is not installed"); return }
        let n = try NetnsLab.threeNamespaces("walk")
        let (inet, router, prot) = (n.names[0], n.names[1], n.names[2])
        let apply = n.reflectguard(router, ["nft", "apply", "--backend", "xt"] + Self.protect)
        #expect(apply.status == 0, "\(apply.stderr)")
        // An operator's own filter rule (counting only): queued packets must still reach it.
        for tool in ["iptables-nft", "ip6tables-nft"] {
            try n.must(router, [tool, "-A", "FORWARD", "-p", "tcp", "-m", "comment", "--comment", "operator"])
        }
        func operatorSaw(_ tool: String) throws -> Int {
            let out = try n.must(router, [tool, "-L", "FORWARD", "-v", "-x", "-n"]).stdout
            let line = out.split(separator: "\n").first { $0.contains("operator") }!
            return Int(line.split(separator: " ").first!)!
        }
        let sender = try NetnsLab.script("sender", NetnsLab.senderScript)
        func queued(_ tool: String) throws -> Int {
            let out = try n.must(router, [tool, "-t", "mangle", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
            let line = out.split(separator: "\n").first { $0.contains("NFQUEUE") }!
            return Int(line.split(separator: " ").first!)!
        }
        // (namespace, family, source, destination, flags, queued?) — destinations in the
        // protected range that do not exist, so no host answers and adds packets of its own.
        let walk: [(String, String, String, String, String, Bool)] = [
            (inet, "4", "198.18.1.2", "198.18.2.99", "SA", true),    // SYN-ACK received
            (inet, "4", "198.18.1.2", "198.18.2.99", "R", true),     // RST received
            (inet, "4", "198.18.1.2", "198.18.2.99", "A", false),    // plain ACK: stays in the kernel
            (inet, "4", "198.18.1.2", "198.18.2.99", "S", false),    // SYN to a protected host
            (prot, "4", "198.18.2.2", "198.18.1.99", "S", true),     // SYN sent by a protected host
            (prot, "4", "198.18.2.2", "198.18.1.99", "A", false),
            (prot, "4", "198.18.2.2", "198.18.1.99", "RA", true),    // RST sent
            (inet, "6", "2001:db8:1::2", "2001:db8:2::99", "SA", true),
            (inet, "6", "2001:db8:1::2", "2001:db8:2::99", "R", true),
            (inet, "6", "2001:db8:1::2", "2001:db8:2::99", "A", false),
            (prot, "6", "2001:db8:2::2", "2001:db8:1::99", "S", true),
            (prot, "6", "2001:db8:2::2", "2001:db8:1::99", "A", false),
        ]
        for (ns, fam, src, dst, flags, expectQueued) in walk {
            let tool = fam == "6" ? "ip6tables-nft" : "iptables-nft"
            let before = try queued(tool)
            try n.must(ns, ["python3", sender, fam, src, dst, "40000", "443", flags, "1"])
            let after = try queued(tool)
            #expect(after - before == (expectQueued ? 1 : 0), "\(flags) \(src) → \(dst): queued \(after - before)")
        }
        #expect(try operatorSaw("iptables-nft") == walk.filter { $0.1 == "4" }.count)
        #expect(try operatorSaw("ip6tables-nft") == walk.filter { $0.1 == "6" }.count)
    }

    /// Host mode: the protected host's own INPUT queues what it receives and the engine needs.
    @Test func hostModeQueuesReceivedSynAcksAndRstsOnly() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        guard TestEnvironment.which("python3") != nil else { TestEnvironment.unavailable("python3 is not installed"); return }
        let n = try NetnsLab.threeNamespaces("host")
        let (inet, prot) = (n.names[0], n.names[2])
        let apply = n.reflectguard(prot, ["nft", "apply", "--backend", "xt", "--hook", "host",
                                          "--protect", "198.18.2.2", "--protect", "2001:db8:2::2"])
        #expect(apply.status == 0, "\(apply.stderr)")
        let sender = try NetnsLab.script("sender", NetnsLab.senderScript)
        func queued(_ tool: String) throws -> Int {
            let out = try n.must(prot, [tool, "-t", "mangle", "-L", "INPUT", "-v", "-x", "-n"]).stdout
            let line = out.split(separator: "\n").first { $0.contains("NFQUEUE") }!
            return Int(line.split(separator: " ").first!)!
        }
        for (src, dst) in [("198.18.1.2", "198.18.2.2"), ("2001:db8:1::2", "2001:db8:2::2")] {
            let v6 = src.contains(":")
            for (flags, want) in [("SA", 1), ("R", 1), ("A", 0), ("S", 0)] {
                let before = try queued(v6 ? "ip6tables-nft" : "iptables-nft")
                try n.must(inet, ["python3", sender, v6 ? "6" : "4", src, dst, "443", "40000", flags, "1"])
                let delta = try queued(v6 ? "ip6tables-nft" : "iptables-nft") - before
                #expect(delta == want, "host mode \(flags) \(src) → \(dst): queued \(delta)")
            }
        }
    }

    /// The queue rules and `Engine.wouldQueue` (what `score` feeds the engine) agree on every
    /// flag combination, direction, family and `track`, allowlisted peers included, and with
    /// guarded flows (a guarded port either way, a guarded peer host) on top of `handshake`.
    @Test func queueRulesMatchEngineWouldQueue() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        guard TestEnvironment.which("python3") != nil else { TestEnvironment.unavailable("python3 is not installed"); return }
        let n = try NetnsLab.threeNamespaces("match")
        let (inet, router, prot) = (n.names[0], n.names[1], n.names[2])
        let sender = try NetnsLab.script("sender", NetnsLab.senderScript)
        func queued(_ tool: String) throws -> Int {
            let out = try n.must(router, [tool, "-t", "mangle", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
            let line = out.split(separator: "\n").first { $0.contains("NFQUEUE") }!
            return Int(line.split(separator: " ").first!)!
        }
        // SYN, SYN-ACK, RST, RST-ACK, ACK, FIN-ACK, PSH-ACK, SYN+RST, FIN.
        let flagSet: [UInt8] = [0x02, 0x12, 0x04, 0x14, 0x10, 0x11, 0x18, 0x06, 0x01]
        // (namespace, source, destination): inbound from an ordinary and an allowlisted peer, outbound.
        let paths: [(String, String, String)] = [
            (inet, "198.18.1.3", "198.18.2.99"), (inet, "198.18.1.2", "198.18.2.99"), (prot, "198.18.2.2", "198.18.1.99"),
            (inet, "2001:db8:1::3", "2001:db8:2::99"), (inet, "2001:db8:1::2", "2001:db8:2::99"),
            (prot, "2001:db8:2::2", "2001:db8:1::99"),
        ]
        let guarded = ["track_full_ports={ 179, 5432-5433 }", "track_full_hosts_v4={ 198.18.1.3 }",
                       "track_full_hosts_v6={ 2001:db8:1::3 }"]
        let configs: [(track: Track, defines: [String], ports: [(UInt16, UInt16)])] = [
            (.handshake, [], [(40000, 443)]), (.full, [], [(40000, 443)]),
            (.handshake, guarded, [(40000, 443), (40000, 179), (179, 40000), (40000, 5433)]),
        ]
        for (track, extra, portPairs) in configs {
            let defines = ["track=\(track.rawValue)", "allowlist_v4={ 198.18.1.2 }", "allowlist_v6={ 2001:db8:1::2 }"] + extra
            let applied = n.reflectguard(router, ["nft", "apply", "--backend", "xt"] + Self.protect + defines.flatMap { ["-D", $0] })
            #expect(applied.status == 0, "\(applied.stderr)")
            let policy = try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24", "2001:db8:2::/64"],
                                                 defines: defines).policy
            #expect(policy.allowlist.contains(IPAddress("198.18.1.2")!))
            for (ns, src, dst) in paths { for (sport, dport) in portPairs {
                let v6 = src.contains(":")
                let tool = v6 ? "ip6tables-nft" : "iptables-nft"
                for f in flagSet {
                    var p = ParsedPacket()
                    p.network = v6 ? .ipv6 : .ipv4
                    p.hasTCP = true
                    p.ipProtocol = 6
                    p.source = IPAddress(src)!
                    p.destination = IPAddress(dst)!
                    p.sourcePort = sport
                    p.destinationPort = dport
                    p.flags = TCPFlags(rawValue: f)
                    let before = try queued(tool)
                    try n.must(ns, ["python3", sender, v6 ? "6" : "4", src, dst, "\(sport)", "\(dport)", "\(f)", "1"])
                    let delta = try queued(tool) - before
                    #expect(delta == (Engine.wouldQueue(p, policy: policy) ? 1 : 0),
                            "track \(track) \(extra) flags 0x\(String(f, radix: 16)) \(src):\(sport) → \(dst):\(dport): queued \(delta)")
                }
            } }
        }
    }

    /// The learn rule (`learn_interval`): the kernel queues a packet a protected host sends on a
    /// flow not in its learn set, once, and its SYNs and SYN-ACKs put the flow there first; the
    /// engine's `wouldQueue(_:at:)` (what `score` queues) says the same for each packet in turn.
    @Test func learnRuleQueuesWhatTheEngineSays() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        guard TestEnvironment.which("python3") != nil else { TestEnvironment.unavailable("python3 is not installed"); return }
        let n = try NetnsLab.threeNamespaces("rg12learn")
        let (inet, router, prot) = (n.names[0], n.names[1], n.names[2])
        let sender = try NetnsLab.script("sender", NetnsLab.senderScript)
        let applied = n.reflectguard(router, ["nft", "apply", "--backend", "xt"] + Self.protect)
        #expect(applied.status == 0, "\(applied.stderr)")
        let policy = try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24", "2001:db8:2::/64"], defines: []).policy
        let engine = Engine(policy: policy, seed: 1)
        func queued(_ tool: String) throws -> Int {
            let out = try n.must(router, [tool, "-t", "mangle", "-L", "FORWARD", "-v", "-x", "-n"]).stdout
            return Int(out.split(separator: "\n").first { $0.contains("NFQUEUE") }!.split(separator: " ").first!)!
        }
        // (namespace, source, destination, ports, flags): flows older than the rules, a client's
        // new flow, a protected server's, peers' packets (to an address nobody holds, so no
        // stack answers them with a RST the rules would queue), IPv6.
        let steps: [(String, String, String, UInt16, UInt16, UInt8)] = [
            (prot, "198.18.2.2", "198.18.1.9", 40000, 443, 0x10), (prot, "198.18.2.2", "198.18.1.9", 40000, 443, 0x18),
            (prot, "198.18.2.2", "198.18.1.9", 40000, 443, 0x11), (inet, "198.18.1.9", "198.18.2.99", 443, 40000, 0x10),
            (prot, "198.18.2.2", "198.18.1.9", 40001, 443, 0x02), (prot, "198.18.2.2", "198.18.1.9", 40001, 443, 0x10),
            (prot, "198.18.2.2", "198.18.1.9", 443, 50000, 0x12), (prot, "198.18.2.2", "198.18.1.9", 443, 50000, 0x18),
            (prot, "198.18.2.2", "198.18.1.9", 443, 50001, 0x18), (prot, "198.18.2.2", "198.18.1.9", 443, 50001, 0x10),
            (prot, "2001:db8:2::2", "2001:db8:1::9", 40000, 443, 0x10), (prot, "2001:db8:2::2", "2001:db8:1::9", 40000, 443, 0x10),
            (inet, "2001:db8:1::9", "2001:db8:2::99", 443, 40000, 0x18),
        ]
        var learnt = 0
        for (k, (ns, src, dst, sport, dport, f)) in steps.enumerated() {
            let v6 = src.contains(":")
            var p = ParsedPacket()
            p.network = v6 ? .ipv6 : .ipv4
            p.hasTCP = true
            p.ipProtocol = 6
            p.source = IPAddress(src)!
            p.destination = IPAddress(dst)!
            p.sourcePort = sport
            p.destinationPort = dport
            p.flags = TCPFlags(rawValue: f)
            let at = Nanoseconds(k) * 100_000_000
            let want = engine.wouldQueue(p, at: at)
            _ = engine.decideObserved(p, at: at)
            if want && !Engine.wouldQueue(p, policy: policy) { learnt += 1 }
            let tool = v6 ? "ip6tables-nft" : "iptables-nft"
            let before = try queued(tool)
            try n.must(ns, ["python3", sender, v6 ? "6" : "4", src, dst, "\(sport)", "\(dport)", "\(f)", "1"])
            #expect(try queued(tool) - before == (want ? 1 : 0), "step \(k): flags 0x\(String(f, radix: 16)) \(src):\(sport) → \(dst):\(dport)")
        }
        #expect(learnt == 3)
        let set = try n.must(router, ["nft", "list", "set", "inet", "reflectguard", "learn4"]).stdout
        #expect(set.contains("198.18.2.2 . 40000 . 198.18.1.9 . 443"), "\(set)")
    }

    /// The bar for the kernel-only ruleset: a spoofed SYN-ACK flood from forged reflectors
    /// never reaches the protected host, while all its outbound connections succeed, IPv4 and IPv6.
    @Test(arguments: ["4", "6"], [false, true])
    func kernelOnlyRulesetStopsSpoofedSynAckFlood(family: String, conntrack: Bool) throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        guard TestEnvironment.which("python3") != nil else { TestEnvironment.unavailable("python3 is not installed"); return }
        let n = try NetnsLab.threeNamespaces("ko\(family)")
        let (inet, router, prot) = (n.names[0], n.names[1], n.names[2])
        let v6 = family == "6"
        // The generated conntrack-free ruleset, or the optional conntrack snippet.
        var path = RulesConfigTests.repo.appendingPathComponent("nft/kernel-conntrack.nft").path
        if !conntrack {
            let gen = n.reflectguard(router, ["nft", "generate", "--kernel-only"] + Self.protect)
            #expect(gen.status == 0, "\(gen.stderr)")
            path = TestEnvironment.temporaryPath("rgt-rules-ko.nft")
            try gen.stdout.write(toFile: path, atomically: true, encoding: .utf8)
        }
        defer { if !conntrack { try? FileManager.default.removeItem(atPath: path) } }
        try n.must(router, ["nft", "-f", path])   // standalone: plain nft loads it, no agent
        // The protected host counts forged SYN-ACKs that reach it.
        let forged = v6 ? "ip6 saddr 2001:db8:ff::/48" : "ip saddr 198.19.0.0/16"
        try n.must(prot, ["nft", "add table inet probe; add chain inet probe in { type filter hook input priority 0; }; add rule inet probe in \(forged) tcp flags & (syn | ack) == syn | ack counter"])

        let serverAddr = v6 ? "2001:db8:1::2" : "198.18.1.2"
        let server = try NetnsLab.script("server", """
            import socket, sys
            s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((sys.argv[1], 8080)); s.listen(128); s.settimeout(30)
            for _ in range(int(sys.argv[2])):
                c, _ = s.accept(); c.sendall(b'ok'); c.close()
            """)
        let client = try NetnsLab.script("client", """
            import socket, sys
            ok = 0
            for _ in range(int(sys.argv[2])):
                try:
                    c = socket.create_connection((sys.argv[1], 8080), timeout=5)
                    if c.recv(2) == b'ok': ok += 1
                    c.close()
                except OSError as e:
                    print('failed:', e, file=sys.stderr)
            print(ok)
            """)
        let connections = 30
        let serverDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = n.exec(inet, ["python3", server, serverAddr, "\(connections)"], timeout: 40)
            serverDone.signal()
        }
        // The server listens before the client connects (polled: a sleep can be outlasted, and a
        // connection refused would count as a lost legitimate one).
        let listening = Date().addingTimeInterval(20)
        while n.exec(inet, ["ss", "-Hltn", "sport = :8080"]).stdout.isEmpty && Date() < listening { usleep(50_000) }
        let spoofed = 5000
        let sender = try NetnsLab.script("sender", NetnsLab.senderScript)
        let floodDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            // Forged reflectors (random addresses and source ports) answer SYNs nobody sent,
            // towards the protected host's ephemeral ports.
            let src = v6 ? "2001:db8:ff::*" : "198.19.1.*"
            let dst = v6 ? "2001:db8:2::2" : "198.18.2.2"
            _ = n.exec(inet, ["python3", sender, family, src, dst, "0", "0", "SA", "\(spoofed)"], timeout: 60)
            floodDone.signal()
        }
        let result = n.exec(prot, ["python3", client, serverAddr, "\(connections)"], timeout: 60)
        floodDone.wait()
        serverDone.wait()
        #expect(Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == connections,
                "legitimate connections: \(result.stdout) \(result.stderr)")
        let reached = try n.must(prot, ["nft", "list", "chain", "inet", "probe", "in"]).stdout
        #expect(reached.contains("counter packets 0 "), "forged SYN-ACKs reached the protected host: \(reached)")
        // The agent's table counts its drops in named counters; the conntrack snippet, in its rules.
        let dropLine: Substring
        if conntrack {
            let listing = try n.must(router, ["nft", "list", "chain", "inet", "reflectguard_ct", "forward"]).stdout
            dropLine = listing.split(separator: "\n").first { $0.contains(v6 ? "ip6 daddr" : "ip daddr") && $0.contains("ct state invalid") }!
        } else {
            dropLine = Substring(try n.must(router, ["nft", "list", "counter", "inet", "reflectguard", "drop_unsolicited_synack_v\(family)"])
                .stdout.replacingOccurrences(of: "\n", with: " "))
        }
        let words = dropLine.split(whereSeparator: { $0 == " " || $0 == "\t" })
        let dropped = words.firstIndex(of: "packets").map { Int(words[$0 + 1]) ?? -1 } ?? -1
        #expect(dropped == spoofed, "router dropped \(dropped) of \(spoofed) forged SYN-ACKs")
    }
}
