import Foundation
import Testing
import NftBackend

/// Every drop the agent's table makes in the kernel is counted by a named counter that /metrics
/// exports (`reflectguard_kernel_drops_total{family, reason}`): a drop added without one would be
/// invisible on every dashboard.
@Suite struct KernelCounterNamesTests {
    static let ruleset = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("nft/reflectguard.nft")

    @Test func everyDropOfTheTableHasADeclaredNamedCounter() throws {
        let text = try String(contentsOf: Self.ruleset, encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.hasPrefix("#") }
        let declared = Set(lines.compactMap { $0.firstMatch(of: #/^counter ([a-z0-9_]+) \{ \}$/#).map { String($0.1) } })
        var used = Set<String>()
        var drops = 0
        for line in lines where line.hasSuffix(" drop") || line.hasSuffix(" accept") && line.contains("counter") {
            if line.hasSuffix(" drop") { drops += 1 }
            let name = try #require(line.firstMatch(of: #/counter name "([a-z0-9_]+)"/#), "an anonymous counter: \(line)")
            used.insert(String(name.1))
            #expect(declared.contains(String(name.1)), "counter \(name.1) is used but not declared")
        }
        #expect(drops >= 12, "the table's drops were found (\(drops))")
        #expect(used == declared, "declared but unused: \(declared.subtracting(used).sorted())")
        for name in declared {
            let p = try #require(KernelCounters.parse(name), "\(name): VERDICT_REASON_v4|_v6")
            #expect(["drop", "accept"].contains(p.verdict))
        }
    }

    @Test func counterNamesParseIntoVerdictReasonAndFamily() {
        #expect(KernelCounters.parse("drop_unsolicited_synack_v4")! == ("drop", "unsolicited-synack", "ipv4"))
        #expect(KernelCounters.parse("accept_solicited_synack_v6")! == ("accept", "solicited-synack", "ipv6"))
        #expect(KernelCounters.parse("drop_rst_prefix_rate_limit_v6")! == ("drop", "rst-prefix-rate-limit", "ipv6"))
        for bad in ["drop_v4", "reject_x_v4", "drop_x_v5", "drop_X_v4", "drop_x-y_v4", "synack", "drop__v6x"] {
            #expect(KernelCounters.parse(bad) == nil, "\(bad)")
        }
    }
}
