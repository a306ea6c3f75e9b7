import Testing
@testable import Rules
import VerdictEngine

/// The operator's configuration file: define lines layered over the ruleset, errors at the
/// configuration's own FILE:LINE:COL. No privileges needed.
@Suite struct ConfigOverlayTests {
    static func conf(_ text: String) -> RulesFile { RulesFile(name: "/etc/reflectguard/reflectguard.conf", text: text) }

    @Test func valuesLayerOverTheEmbeddedRuleset() throws {
        let r = try RulesConfig.resolve(rules: .embedded, config: Self.conf("""
            # only what the operator changes
            define protected_v4 = {
                198.18.2.0/24,   # first site
                198.18.3.0/24
            }
            define rst_rate = 75
            define queue = 2-3

            """))
        #expect(r.policy.protected.prefixes.map(\.description) == ["198.18.2.0/24", "198.18.3.0/24"])
        #expect(r.policy.rstRate == 75)
        #expect(r.queues == QueueRange(first: 2, last: 3))
        // Everything else is the ruleset's, and the text for nft carries the values on the
        // ruleset's own lines (nft's errors keep pointing into the ruleset).
        #expect(r.policy.rstBurst == Policy().rstBurst)
        #expect(r.text.split(separator: "\n").count == RulesFile.embedded.text.split(separator: "\n").count)
        #expect(r.text.contains("define rst_rate = 75\n"))
        #expect(r.config?.name == "/etc/reflectguard/reflectguard.conf")
    }

    @Test func commandLineOverridesTheConfiguration() throws {
        let c = Self.conf("define protected_v4 = { 198.18.2.0/24 }\ndefine rst_rate = 75\n")
        let r = try RulesConfig.resolve(rules: .embedded, config: c, protect: ["2001:db8:2::/64"],
                                        defines: ["rst_rate=80"])
        #expect(r.policy.rstRate == 80)
        #expect(Set(r.policy.protected.prefixes.map(\.description)) == ["198.18.2.0/24", "2001:db8:2::/64"])
        // A bare element where the ruleset has a set is a one-element set, as with -D.
        let bare = try RulesConfig.resolve(rules: .embedded, config: Self.conf("define protected_v4 = 198.18.9.0/24\n"))
        #expect(bare.policy.protected.prefixes.map(\.description) == ["198.18.9.0/24"])
    }

    @Test(arguments: [
        // a value the define table refuses: at the value, with the offset inside it
        ("\ndefine rst_rate = banana\n", 2, 19, "rst_rate"),
        ("define protected_v4 = { 198.18.2.0/24, 10.0.0.010/8 }\n", 1, 40, "010"),
        // a value refused after a set was wrapped: at the value
        ("define mode = sideways\n", 1, 15, "sideways"),
        // a name the ruleset does not define
        ("# c\ndefine rst_rte = 5\n", 2, 18, "has no 'define rst_rte'"),
        // twice
        ("define rst_rate = 5\ndefine rst_rate = 6\n", 2, 19, "defined twice"),
        // anything but a define or a comment
        ("define rst_rate = 5\n  table inet reflectguard { }\n", 2, 3, "only 'define NAME = VALUE' lines"),
        ("flush ruleset\n", 1, 1, "only 'define NAME = VALUE' lines"),
        ("define rst_rate = 5; flush ruleset\n", 1, 22, "only a comment may follow"),
        ("define protected_v4 = { 198.18.2.0/24\n", 1, 23, "unterminated"),
        ("define rst_burst = $nosuch\n", 1, 20, "no such define"),
    ])
    func errorsNameTheConfigurationsLineAndColumn(text: String, line: Int, column: Int, quoted: String) {
        do {
            _ = try RulesConfig.resolve(rules: .embedded, config: Self.conf(text))
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.location == SourceLocation(file: "/etc/reflectguard/reflectguard.conf", line: line, column: column),
                    "\(error)")
            #expect(error.description.hasPrefix("/etc/reflectguard/reflectguard.conf:\(line):\(column): error: "), "\(error)")
            #expect(error.message.contains(quoted), "\(error)")
            #expect(!error.fromCommandLine)
        }
    }

    @Test func theShippedConfigurationLoadsAndProtectsNothing() throws {
        let path = RulesConfigTests.repo.appendingPathComponent("scripts/package/reflectguard.conf").path
        let r = try RulesConfig.resolve(rules: .embedded, config: try RulesFile.load(path: path))
        #expect(r.policy.protected.isEmpty, "the package must not start enforcing before the operator names a network")
        #expect(r.policy == Policy())
    }
}
