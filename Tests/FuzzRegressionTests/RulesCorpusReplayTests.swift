import Foundation
import Testing
import Rules

/// Replays the committed rules fuzz corpus (Fuzz/corpus-rules: seeds, inputs libFuzzer found
/// interesting, minimised with `scripts/fuzz.sh rules merge`, and the reproducer of every bug it
/// found) through the rules fuzz target's own checks.
struct RulesCorpusReplayTests {
    static let corpus = CorpusReplayTests.corpus.deletingLastPathComponent().appendingPathComponent("corpus-rules")

    static func inputs() throws -> [URL] { try CorpusReplayTests.inputs(in: corpus) }

    @Test func corpusIsPresentAndSmall() throws {
        try CorpusReplayTests.expectPresentAndSmall(Self.corpus, maxFiles: 200, maxLength: 16384)
    }

    @Test func everyCorpusInputKeepsTheInvariants() throws {
        for f in try Self.inputs() {
            let data = try Data(contentsOf: f)
            let failures = data.withUnsafeBytes { RulesFuzzInvariants.check($0) }
            #expect(failures.isEmpty, "\(f.lastPathComponent): \(failures.prefix(5).joined(separator: "; "))")
        }
    }

    /// The checks can fail: a rendered text that no longer resolves is reported.
    @Test func theEmbeddedRulesetIsAcceptedAndTheChecksRun() throws {
        let embedded = Array(RulesFile.embedded.text.utf8)
        #expect(embedded.withUnsafeBytes { RulesFuzzInvariants.check($0) }.isEmpty)
        var failures: [String] = []
        RulesFuzzInvariants.checkError(RulesError("x", at: nil), lineCount: 1, into: &failures)
        #expect(failures.count == 1, "a file error without a location is reported")
    }
}
