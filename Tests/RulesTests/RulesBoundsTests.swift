import Foundation
import Testing
import PacketParser
@testable import Rules
import TestSupport
import VerdictEngine

/// Input the agent and nft could read differently, or that has no bound: refused with its
/// position (file) or as a usage error (command line), never guessed, clamped or read forever.
/// No privileges needed.
@Suite struct RulesBoundsTests {
    static func resolve(_ text: String, protect: [String] = [], defines: [String] = []) throws(RulesError) -> ResolvedRules {
        try RulesConfig.resolve(rules: RulesFile(name: "t.nft", text: text), protect: protect, defines: defines)
    }

    /// The error for a file, expected at `line:column` and saying `says`.
    static func expectFileError(_ text: String, _ line: Int, _ column: Int, _ says: String,
                                sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            _ = try resolve(text)
            Issue.record("accepted: \(text.prefix(200))", sourceLocation: sourceLocation)
        } catch {
            #expect(error.location == Rules.SourceLocation(file: "t.nft", line: line, column: column), "\(error)",
                    sourceLocation: sourceLocation)
            #expect(error.message.contains(says), "\(error)", sourceLocation: sourceLocation)
            #expect(!error.fromCommandLine, sourceLocation: sourceLocation)
        }
    }

    static func expectUsageError(_ protect: [String] = [], _ defines: [String], _ says: String,
                                 sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            _ = try RulesConfig.resolve(rules: .embedded, protect: protect, defines: defines)
            Issue.record("accepted \(protect) \(defines)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.fromCommandLine, "\(error)", sourceLocation: sourceLocation)
            #expect(error.location == nil, sourceLocation: sourceLocation)
            #expect(error.message.contains(says), "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// A `-D` value the table refuses: a rules error (exit 3) at the define it would replace in
    /// the embedded ruleset, as the same value written in the file is.
    static func expectDefineError(_ define: String, _ says: String,
                                  sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let name = String(define.prefix { $0 != "=" })
        let lines = RulesFile.embedded.text.split(separator: "\n", omittingEmptySubsequences: false)
        let line = lines.firstIndex { $0.hasPrefix("define \(name) = ") }.map { $0 + 1 }
        do {
            _ = try RulesConfig.resolve(rules: .embedded, defines: [define])
            Issue.record("accepted -D \(define)", sourceLocation: sourceLocation)
        } catch {
            #expect(!error.fromCommandLine, "\(error)", sourceLocation: sourceLocation)
            #expect(error.location?.file == RulesFile.embeddedName && error.location?.line == line,
                    "\(error)", sourceLocation: sourceLocation)
            #expect(error.message.contains(says), "\(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: addresses

    @Test(arguments: [
        ("define protected_v4 = { 198.18.2.010 }\n", 25, "octet '010' has a leading zero"),
        ("define protected_v4 = { 198.18.2.0/24, 010.0.0.0/8 }\n", 40, "octet '010'"),
        ("define protected_v4 = { 198.18.2.00 }\n", 25, "leading zero"),
        ("define protected_v4 = { 198.18.2.0/024 }\n", 25, "prefix length '/024' has a leading zero"),
        ("define protected_v4 = { 198.18.2.0/08 }\n", 25, "'/08' has a leading zero"),
        ("define protected_v6 = { 2001:db8::/064 }\n", 25, "'/064' has a leading zero"),
        ("define protected_v6 = { ::ffff:198.18.2.010 }\n", 25, "octet '010'"),
        ("define protected_v6 = { fe80::1%lo }\n", 25, "zone index"),
        ("define protected_v6 = { 2001:db8::+1 }\n", 25, "not an IPv6 address"),
        ("define allowlist_v4 = { 3323068938 }\n", 25, "not an IPv4 address"),
        ("define allowlist_v4 = { 0x0a000001 }\n", 25, "not an IPv4 address"),
    ])
    func addressesNftReadsOtherwiseAreRefusedWhereTheyStand(text: String, column: Int, says: String) {
        Self.expectFileError(text, 1, column, says)
    }

    @Test func zeroAloneAndHexGroupsWithZerosAreFine() throws {
        let r = try Self.resolve("define protected_v4 = { 0.0.0.0/0, 198.18.0.0/16, 10.0.0.0/8 }\n"
                                 + "define protected_v6 = { 2001:0db8:0000::/48, ::/0 }\n")
        #expect(r.policy.protected.prefixes.count == 5)
        #expect(r.policy.protected.contains(IPAddress("198.18.9.9")!))
    }

    @Test func protectOnTheCommandLineIsAUsageError() {
        Self.expectUsageError(["198.18.2.010"], [], "leading zero")
        Self.expectUsageError(["2001:db8:2::/064"], [], "leading zero")
        Self.expectDefineError("protected_v4=198.18.2.0/024", "leading zero")
    }

    /// glibc's inet_pton is strict (no leading zeros, no legacy forms): wherever ours accepts an
    /// address it must accept it too, to the same bytes, and for IPv4 the two accept the same set.
    @Test func parserAgreesWithInetPton() {
        var rng = SplitMix(state: 0x5eed_0411)
        let v4Alphabet = Array("0123456789.")
        let v6Alphabet = Array("0123456789abcdefABCDEF:.%+")
        var accepted = 0
        for i in 0..<60_000 {
            let v6 = i % 2 == 1
            let alphabet = v6 ? v6Alphabet : v4Alphabet
            let length = 1 + Int(rng.next() % (v6 ? 24 : 16))
            var text = String((0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
            if !v6, i % 4 == 0 {   // mostly well-formed quads, some with leading zeros
                text = (0..<4).map { _ in
                    let n = rng.next() % 300
                    return rng.next() % 5 == 0 ? "0\(n)" : "\(n)"
                }.joined(separator: ".")
            }
            var buffer = [UInt8](repeating: 0, count: 16)
            let pton = inet_pton(v6 ? AF_INET6 : AF_INET, text, &buffer) == 1
            let ours = IPAddress(text)
            if let ours, text.contains(":") == v6 {
                accepted += 1
                #expect(pton, "ours accepts '\(text)', inet_pton does not")
                let want = v6 ? Array(0..<16).map { ours.bytes[$0] } : Array(12..<16).map { ours.bytes[$0] }
                #expect(pton && Array(buffer.prefix(v6 ? 16 : 4)) == want, "'\(text)'")
            }
            if !v6 { #expect(pton == (ours != nil), "'\(text)': inet_pton \(pton), ours \(ours != nil)") }
        }
        #expect(accepted > 1000)
    }

    // MARK: the define table

    @Test func everyDefineOfTheEmbeddedRulesetHasARow() throws {
        let scanner = try RulesScanner(bytes: Array(RulesFile.embedded.text.utf8), file: "embedded")
        let missing = scanner.defines.map(\.name).filter { DefineTable.kinds[$0] == nil }
        #expect(missing.isEmpty, "add a row to DefineTable.kinds for \(missing)")
    }

    @Test(arguments: [
        ("rst_rate", "+5", "no sign"), ("rst_rate", "050", "leading zero"), ("rst_rate", "0x10", "decimal digits"),
        ("rst_rate", "0", "out of range"), ("rst_burst", "1000000001", "out of range"),
        ("rst_rate", "5/second", "decimal digits"), ("attack_rate", "18446744073709551616", "out of range"),
        ("backscatter_burst", "-1", "no sign"),
        ("syn_horizon", "99999999d", "out of range"), ("syn_horizon", "60", "not a time"),
        ("syn_horizon", "0s", "out of range"), ("synack_horizon", "99999999999999999999s", "not a time"),
        ("armed_timeout", "1s1m", "not a time"),
        ("syn_table_size", "16777217", "out of range"), ("syn_table_size", "4294967296", "out of range"),
        ("score_threshold", "101", "out of range"), ("score_threshold", "060", "leading zero"),
        ("queues", "010", "leading zero"), ("queues", "3-1", "above"), ("queues", "65536", "out of range"),
        ("queue_mark", "0x0", "non-zero"), ("queue_mark", "010", "leading zero"), ("queue_mark", "0x100000000", "non-zero"),
        ("ephemeral_ports", "0-100", "out of range"), ("ephemeral_ports", "01024-65535", "leading zero"),
        ("ephemeral_ports", "2000-1000", "above"),
        ("inside_ifaces", "{ \"a/b\" }", "interface name"), ("outside_ifaces", "{ 0123456789abcdef }", "interface name"),
        ("kernel_enforce", "sometimes", "not one of armed, always, off"),
        // One set and nothing else: nft refuses the stray part, so the agent must not read a
        // set out of what comes before it.
        ("protected_v4", "{ 198.18.2.0/24 } 10.0.0.0/8", "after the set's closing '}'"),
        ("protected_v4", "{ 198.18.2.0/24 } }", "after the set's closing '}'"),
        ("protected_v4", "{ 198.18.2.0/24 }}}}", "after the set's closing '}'"),
        ("protected_v4", "{ 198.18.2.0/24 }, { 10.0.0.0/8 }", "after the set's closing '}'"),
        ("protected_v4", "{ { 198.18.2.0/24 } 10.0.0.0/8 }", "no comma after"),
        ("protected_v4", "{ 198.18.2.0/24 { 10.0.0.0/8 } }", "starts no set"),
        ("protected_v6", "{ 2001:db8::/32 } 2001:db8:1::/48", "after the set's closing '}'"),
        ("track_full_ports", "{ 179 } 22", "after the set's closing '}'"),
        ("inside_ifaces", "{ \"veth0\" } }", "after the set's closing '}'"),
    ])
    func outOfRangeValuesAreRefusedNotClamped(name: String, value: String, says: String) throws {
        let base = RulesFile.embedded.text
        let lines = base.split(separator: "\n", omittingEmptySubsequences: false)
        let line = try #require(lines.firstIndex { $0.hasPrefix("define \(name) = ") }) + 1
        let original = String(lines[line - 1])
        let text = base.replacingOccurrences(of: original, with: "define \(name) = \(value)")
        do {
            _ = try RulesConfig.resolve(rules: RulesFile(name: "t.nft", text: text))
            Issue.record("file accepted \(name) = \(value)")
        } catch {
            // At the value (set elements: at the element).
            #expect(error.location?.line == line && (error.location?.column ?? 0) >= "define \(name) = ".utf8.count + 1, "\(error)")
            #expect(error.message.hasPrefix("\(name): ") && error.message.contains(says), "\(error)")
        }
        // The same value from -D: the same rules error, at the define it replaces.
        Self.expectDefineError("\(name)=\(value)", says)
    }

    /// A set inside the set (what `$name` of a set define expands to) is flattened, as nft does.
    @Test func nestedSetsAndMultiLineSetsAreStillRead() throws {
        let r = try Self.resolve("define a = { 10.0.0.0/8 }\ndefine protected_v4 = { $a, 198.18.2.0/24, { 192.0.2.0/24 } }\n"
                                 + "define inside_ifaces = { \"veth0\", veth1 }\n")
        #expect(r.policy.protected.prefixes.count == 3)
        #expect(r.policy.insideInterfaces.count == 2)
        let s = try RulesConfig.resolve(rules: .embedded, protect: ["203.0.113.0/24"],
                                        defines: ["protected_v4=198.18.2.0/24, 192.0.2.0/24"])
        #expect(s.policy.protected.prefixes.count == 3)
    }

    /// In a file the scanner already refuses a brace or quote left open (it would swallow the
    /// lines below); from `-D`, one line, the set's own check must.
    @Test func unbalancedBracesAndQuotesFromTheCommandLineAreRulesErrors() {
        Self.expectDefineError("protected_v4={ 198.18.2.0/24", "left open")
        Self.expectDefineError("protected_v4=198.18.2.0/24 }", "'}'")
        Self.expectDefineError("allowlist_v4={ 198.18.2.0/24 } {", "after the set's closing '}'")
        Self.expectDefineError("inside_ifaces={ \"veth0 }", "quote is left open")
        Self.expectDefineError("outside_ifaces=veth0, \"veth1", "quote is left open")
        Self.expectDefineError("outside_ifaces={ veth0 }, { veth1 }", "after the set's closing '}'")
    }

    /// `--protect` merges into the set: a malformed `-D` set must still be refused, not merged
    /// into a valid one.
    @Test func protectDoesNotSmoothAMalformedSet() {
        do {
            _ = try RulesConfig.resolve(rules: .embedded, protect: ["203.0.113.0/24"],
                                        defines: ["protected_v4={ 198.18.2.0/24 } 10.0.0.0/8"])
            Issue.record("accepted")
        } catch {
            #expect(!error.fromCommandLine && error.message.contains("after the set's closing '}'"), "\(error)")
        }
    }

    @Test func boundsThemselvesAreAccepted() throws {
        let r = try RulesConfig.resolve(rules: .embedded, defines: [
            "rst_rate=1000000000", "rst_burst=1", "syn_table_size=16777216", "syn_horizon=1d", "synack_horizon=10ms",
            "armed_timeout=2m11s", "score_threshold=0", "queue=0:65535", "queue_mark=4294967295", "ephemeral_ports=1-65535",
        ])
        #expect(r.policy.rstRate == 1_000_000_000)
        #expect(r.policy.synTableCapacity == 16_777_216)
        #expect(r.policy.synHorizon == 86_400)
        #expect(r.policy.synackHorizon == 0.01)
        #expect(r.armedTimeout == 131)
        #expect(r.queueMark == .max)
        #expect(r.queues == QueueRange(first: 0, last: 65535))
    }

    // MARK: references between defines

    @Test func referencesResolveToDefinesAboveInFileOrder() throws {
        let r = try Self.resolve("define base = 7\ndefine rst_rate = $base\ndefine two = { $x }\n".replacingOccurrences(of: "$x", with: "198.18.2.0/24")
                                 + "define protected_v4 = $two\n")
        #expect(r.policy.rstRate == 7)
        #expect(r.policy.protected.prefixes == [CIDR("198.18.2.0/24")!])
        Self.expectFileError("define rst_rate = $rst_burst\ndefine rst_burst = 100\n", 1, 19, "defined below")
        Self.expectFileError("define a = $a\n", 1, 12, "refers to itself")
        Self.expectFileError("define a = 1\ndefine b = $nosuch\n", 2, 12, "no such define")
        Self.expectDefineError("rst_rate=$rst_burst", "defined below")
        // Below the define it refers to, a reference on the command line is fine.
        #expect(try RulesConfig.resolve(rules: .embedded, defines: ["rst_burst=$rst_rate"]).policy.rstBurst == 50)
    }

    @Test func chainedDefinesAreBoundedInDepthAndSize() throws {
        var deep = "define d0 = 5\n"
        for i in 1...16 { deep += "define d\(i) = $d\(i - 1)\n" }
        _ = try Self.resolve(deep)                                    // 16 deep: fine
        Self.expectFileError(deep + "define d17 = $d16\n", 18, 14, "more than 16 deep")

        // The "billion laughs": each define ten of the one before. Refused at the define where
        // the expansion passes 1 MiB, long before gigabytes.
        var laughs = "define a0 = { 198.18.2.1 }\n"
        for i in 1...30 { laughs += "define a\(i) = { " + Array(repeating: "$a\(i - 1)", count: 10).joined(separator: ", ") + " }\n" }
        do {
            _ = try Self.resolve(laughs)
            Issue.record("billion laughs accepted")
        } catch {
            #expect(error.location?.line == 6, "\(error)")   // a5: 10^5 copies of 14 bytes
            #expect(error.message.contains("more than 1048576 bytes"), "\(error)")
        }
    }

    @Test func expansionIntoTheRulesIsBounded() throws {
        let value = String(repeating: "x", count: 1000)
        let rules = Array(repeating: "\t\tcomment $big", count: 1100).joined(separator: "\n")
        Self.expectFileError("define big = \(value)\ntable inet reflectguard {\n\tchain c {\n\(rules)\n\t}\n}\n",
                             1056, 11, "more than 1048576 bytes")   // the 1053rd expansion passes 1 MiB
    }

    // MARK: -D

    @Test(arguments: ["rst_rate=5\r\nflush ruleset", "rst_rate=5\r", "rst_rate=5\nflush ruleset", "rst_rate=\t5",
                      "rst_rate=5\u{85}", "rst_rate=5\u{2028}x", "rst_rate=5\u{0}", "rst\r_rate=5"])
    func controlCharactersInADefineAreUsageErrors(item: String) {
        Self.expectUsageError([], [item], "control character")
    }

    // MARK: statements outside ReflectGuard's table

    @Test(arguments: [
        ("flush ruleset\n", 1, 1, "only 'define' and 'table inet reflectguard'"),
        ("table ip other {\n}\n", 1, 1, "outside ReflectGuard's table"),
        ("delete table inet reflectguard\n", 1, 1, "outside"),
        ("add table inet reflectguard\n", 1, 1, "outside"),
        ("table inet reflectguard {\n}\n\t flush ruleset # again\n", 3, 3, "'flush ruleset'"),
        ("table inet reflectguard { chain c { } }; flush ruleset\n", 1, 42, "'flush ruleset'"),
        ("define mode = symmetric; flush ruleset\n", 1, 26, "only a comment may follow ';'"),
        ("include \"/etc/nftables.conf\"\n", 1, 1, "include is not allowed"),
        ("table inet reflectguard {\n\tchain c {\n\t\tinclude \"/tmp/x.nft\"\n\t}\n}\n", 3, 3, "include is not allowed"),
        ("table inet reflectguard {\n\tdefine x = 1\n}\n", 2, 2, "inside a block"),
        ("redefine mode = full\n", 1, 1, "redefine is not allowed"),
        ("table inet reflectguard {\n\tflags dormant\n}\n", 2, 2, "table flags"),
        ("table inet reflectguard { }\nreset counters\n", 2, 1, "outside"),
        // A scalar define is pasted in as text: checked again where it lands.
        ("define x = } } ; flush ruleset\ntable inet reflectguard {\n\tchain c {\n\t\t$x\n\t}\n}\n", 5, 1,
         "with its defines expanded: unbalanced '}'"),
        ("define x = } } ; flush ruleset\ntable inet reflectguard {\n\tchain c {\n\t\t$x\ntable inet reflectguard {\n\tchain d {\n\t}\n}\n",
         4, 3, "with its defines expanded: 'flush ruleset'"),
    ])
    func commandsOutsideTheTableAreRulesErrors(text: String, line: Int, column: Int, says: String) {
        Self.expectFileError(text, line, column, says)
    }

    @Test func commentsStringsAndSetFlagsAreNotCommands() throws {
        let text = """
            # flush ruleset (a comment)
            define mode = symmetric   # ; flush ruleset
            table inet reflectguard {
            \tset s {
            \t\ttype ipv4_addr
            \t\tflags interval
            \t}
            \tchain c {
            \t\tcounter comment "flush ruleset; include x"
            \t}
            }
            """
        _ = try Self.resolve(text)
        _ = try RulesConfig.resolve(rules: .embedded)
    }

    // MARK: reading the file

    /// A link to /proc/self/environ is a regular file of size 0 that reads as the agent's
    /// environment: it, and any file with a NUL or other control byte, is refused as not text,
    /// at the byte, without a word of its content in the message.
    @Test func aFileWithControlBytesIsRefusedWithoutQuotingIt() throws {
        let path = TestEnvironment.temporaryPath("rules-nul.nft")
        defer { unlink(path) }
        let secret = "SECRET_TOKEN_VALUE"
        try Data("define mode = inline\ndefine x = \(secret)\0OTHER=\(secret)\n".utf8).write(to: URL(fileURLWithPath: path))
        let link = TestEnvironment.temporaryPath("rules-environ.nft")
        unlink(link)
        #expect(symlink("/proc/self/environ", link) == 0)
        defer { unlink(link) }
        for (p, line, column) in [(path, 2, 30), (link, 1, 0)] {
            do {
                _ = try RulesFile.load(path: p)
                Issue.record("read \(p)")
            } catch {
                #expect(!error.isUnreadableFile && !error.fromCommandLine, "\(error)")
                #expect(error.location?.file == p && error.location?.line == line, "\(error)")
                if column > 0 { #expect(error.location?.column == column, "\(error)") }
                #expect(error.message.contains("control byte 0x00"), "\(error)")
                #expect(!error.description.contains(secret) && !error.description.contains("PATH="), "\(error)")
                #expect(!error.description.unicodeScalars.contains(where: RulesConfig.isControl), "\(error)")
                #expect(error.description.utf8.count < 300, "\(error)")
            }
        }
    }

    /// What a message quotes of the file is escaped and bounded: a C1 control (valid UTF-8, so
    /// not a control byte) and a 100 kB line do not reach the log raw or whole.
    @Test func quotedFileContentIsEscapedAndBounded() {
        for text in ["define mode = in\u{85}line\n", "define mode = " + String(repeating: "x", count: 100_000) + "\n",
                     String(repeating: "y", count: 100_000) + "\n"] {
            do {
                _ = try Self.resolve(text)
                Issue.record("accepted")
            } catch {
                #expect(!error.description.unicodeScalars.contains(where: RulesConfig.isControl), "\(error)")
                #expect(error.message.unicodeScalars.count <= RulesError.messageLimit + 1, "\(error.message.prefix(100))")
            }
        }
    }

    @Test func onlyABoundedRegularFileIsRead() throws {
        for (path, says) in [("/dev/zero", "a character device, not a regular file"), ("/dev/urandom", "a character device, not a regular file"), ("/", "Is a directory")] {
            do {
                _ = try RulesFile.load(path: path)
                Issue.record("read \(path)")
            } catch {
                #expect(error.isUnreadableFile)
                #expect(error.message == "cannot read rules file \(path): \(says)", "\(error)")
            }
        }
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = TestEnvironment.temporaryPath("rules-fifo.nft")
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(throws: RulesError.self) { try RulesFile.load(path: fifo) }

        let big = TestEnvironment.temporaryPath("rules-big.nft")
        defer { unlink(big) }
        let fine = String(repeating: "#", count: RulesFile.sizeLimit - 1) + "\n"
        try fine.write(toFile: big, atomically: true, encoding: .utf8)
        #expect(try RulesFile.load(path: big).text == fine)
        try (fine + "#").write(toFile: big, atomically: true, encoding: .utf8)
        do {
            _ = try RulesFile.load(path: big)
            Issue.record("read a file over the limit")
        } catch {
            #expect(error.isUnreadableFile)
            #expect(error.message.hasSuffix("larger than 1048576 bytes"), "\(error)")
        }
    }
}
