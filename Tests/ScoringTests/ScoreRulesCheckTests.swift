import Foundation
import Testing
import TestSupport

/// `score --rules FILE` checks the file with nft's dry run before scoring, so a ruleset `run`
/// could not load is a rules error (exit 3, nft's FILE:LINE:COL) rather than a clean score.
@Suite struct ScoreRulesCheckTests {
    @Test func aRulesFileNftRejectsExits3WithItsPosition() throws {
        guard let bin = TestEnvironment.binary else { TestEnvironment.unavailable("the reflectguard binary is not built"); return }
        guard let capture = TestEnvironment.capture("sv_ipv4_options_syn.pcap") else {
            TestEnvironment.unavailable("shared capture sv_ipv4_options_syn.pcap is missing"); return
        }
        guard geteuid() == 0 else { TestEnvironment.unavailable("nft's dry run needs CAP_NET_ADMIN (run as root)"); return }
        let shipped = try String(contentsOf: TestEnvironment.packageDirectory.appendingPathComponent("nft/reflectguard.nft"),
                                 encoding: .utf8)
        // Defines still parse (the policy reads), but nft rejects the table body.
        let bad = shipped.replacingOccurrences(of: "table inet reflectguard {\n",
                                               with: "table inet reflectguard {\n\tbogus_keyword here\n")
        #expect(bad != shipped)
        let lineNo = bad.split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex(of: "\tbogus_keyword here")! + 1
        let badPath = TestEnvironment.temporaryPath("bad.nft")
        let goodPath = TestEnvironment.temporaryPath("good.nft")
        try bad.write(toFile: badPath, atomically: true, encoding: .utf8)
        try shipped.write(toFile: goodPath, atomically: true, encoding: .utf8)
        defer {
            try? FileManager.default.removeItem(atPath: badPath)
            try? FileManager.default.removeItem(atPath: goodPath)
        }
        let r = try TestEnvironment.run(bin, ["score", capture, "--rules", badPath])
        #expect(r.status == 3, "\(r.err)")
        #expect(r.err.hasPrefix("\(badPath):\(lineNo):2"), "\(r.err)")
        #expect(r.out.isEmpty)

        let ok = try TestEnvironment.run(bin, ["score", capture, "--rules", goodPath])
        #expect(ok.status == 0, "\(ok.err)")
        #expect(ok.err.isEmpty, "\(ok.err)")
    }
}
