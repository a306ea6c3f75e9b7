import Foundation
import Testing
import Conntrack
import PacketParser
import VerdictEngine

/// Replays the committed ctnetlink fuzz corpus (Fuzz/corpus-conntrack: receives the kernel sent
/// in a namespace lab, inputs libFuzzer found interesting, minimised with `scripts/fuzz.sh
/// conntrack merge`, and the reproducer of every bug it found) through the target's own checks.
struct ConntrackCorpusReplayTests {
    static let corpus = CorpusReplayTests.corpus.deletingLastPathComponent().appendingPathComponent("corpus-conntrack")

    @Test func corpusIsPresentAndSmall() throws {
        try CorpusReplayTests.expectPresentAndSmall(Self.corpus, maxFiles: 200, maxLength: 4096)
    }

    @Test func everyCorpusInputKeepsTheInvariants() throws {
        var facts = 0
        for f in try CorpusReplayTests.inputs(in: Self.corpus) {
            let data = try Data(contentsOf: f)
            let failures = data.withUnsafeBytes { ConntrackFuzzInvariants.check($0) }
            #expect(failures.isEmpty, "\(f.lastPathComponent): \(failures.prefix(5).joined(separator: "; "))")
            data.withUnsafeBytes { ConntrackMessage.forEach(in: $0) { if case .fact = $0 { facts += 1 } } }
        }
        #expect(facts > 20, "the corpus reaches facts, not only rejections")
    }

    /// The checks can fail: a fact written back as the wrong family is caught.
    @Test func theChecksCatchAFamilyMismatch() {
        let fact = ConntrackFact(.present, source: IPAddress("127.0.0.1")!, sourcePort: 1, destination: IPAddress("127.0.0.2")!,
                                 destinationPort: 2, state: .established)
        var bytes = ConntrackFuzzInvariants.encode(fact)
        #expect(bytes.withUnsafeBytes { ConntrackFuzzInvariants.check($0) }.isEmpty)
        bytes[16] = 10   // AF_INET6 over IPv4 addresses
        #expect(bytes.withUnsafeBytes { ConntrackMessage.parse($0) } == .malformed)
    }
}
