import Foundation
import Testing
import Lab
import TestSupport

/// `score` (the binary) on RST-flood scenarios the test generates, with sessions older than the
/// capture ending before, during and after the flood (some of them quiet since the capture's
/// first seconds): what `run` would decide, since `score` queues exactly the packets the rules
/// queue, the learn rule's included.
@Suite struct RSTFloodScoringTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var seed: UInt64, rate: Double, spread: Double, ipv6Share: Double
        var testDescription: String { "seed \(seed), \(Int(rate))/s, spread \(spread), IPv6 \(ipv6Share)" }
    }

    @Test(arguments: [
        Case(seed: 11, rate: 500, spread: 1, ipv6Share: 0),
        Case(seed: 12, rate: 2000, spread: 0.8, ipv6Share: 1),
        Case(seed: 13, rate: 5000, spread: 1, ipv6Share: 0.5),
    ])
    func scoreCutsTheFloodAndDropsNoLegitimateRST(_ c: Case) throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let pcap = TestEnvironment.temporaryPath("rst-\(c.seed).pcap")
        let labels = TestEnvironment.temporaryPath("rst-\(c.seed).labels.csv")
        let shape = RSTFloodShape(rate: c.rate, spread: c.spread, ipv6Share: c.ipv6Share, olderFlows: 400,
                                  olderFlowEnds: [0...16, 18...30, 18...30, 45...70], olderIdleShare: 0.3)
        try ScenarioFiles.write(Scenario(kind: .rstFlood), seed: c.seed, packets: 20_000, pcap: pcap, labels: labels, flood: shape)
        let json = TestEnvironment.temporaryPath("rst-\(c.seed).json")
        let score = try TestEnvironment.run(bin, ["score", pcap] + ScenarioScoringTests.protect
                                            + ["--labels", labels, "--format", "json", "--output", json])
        try #require(score.status == 0, "score: \(score.err)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        let per = try #require((obj["labels"] as? [String: Any])?["per_label"] as? [String: [String: Int]])
        let reasons = try #require(obj["reasons"] as? [String: Int])
        #expect(per["legit"]?["drop"] == 0, "\(c.testDescription): legit frames dropped: \(per)")
        let rst = try #require(per["attack-rst"])
        let passed = rst["accept"] ?? 0, total = passed + (rst["drop"] ?? 0)
        #expect(total > 0 && Double(passed) <= 0.2 * Double(total), "\(c.testDescription): attack-rst \(rst)")
        // The older sessions were learnt from their protected ends' packets.
        #expect((reasons["flow-tracked"] ?? 0) > 100, "\(reasons)")
    }
}
