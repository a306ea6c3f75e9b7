import Foundation
import Testing
import Rules

/// Replays the committed rules fuzz corpus (Fuzz/corpus-rules: seeds, inputs libFuzzer found
/// interesting, minimised with `scripts/fuzz.sh rules merge`, and the reproducer of every bug it
/// found) through the rules fuzz target's own checks.
struct RulesCorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus-rules")

    static func inputs() throws -> [URL] { try CorpusReplayTests.inputs(in: corpus) }

    @Test func everyCorpusInputKeepsTheInvariants() throws {
        let files = try Self.inputs()
        #expect(files.count >= 8, "only \(files.count) inputs in \(Self.corpus.path)")
        for f in files {
            let data = try Data(contentsOf: f)
            #expect(data.count <= 16384, "\(f.lastPathComponent) is over the fuzzer's -max_len")
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
