import Foundation
import Testing
import Captures
import Scoring

/// Replays the file readers' fuzz corpus (Fuzz/corpus-captures: the generated seeds, what
/// libFuzzer found interesting, minimised with `scripts/fuzz-captures.sh merge`, plus the
/// reproducer of every bug it found) through the fuzz target's own checks.
struct CaptureCorpusReplayTests {
    static let corpus = CorpusReplayTests.corpus.deletingLastPathComponent().appendingPathComponent("corpus-captures")

    static func inputs() throws -> [URL] { try CorpusReplayTests.inputs(in: corpus) }

    @Test func corpusIsPresentAndSmall() throws {
        try CorpusReplayTests.expectPresentAndSmall(Self.corpus, maxFiles: 300, maxLength: 4096)
        let files = try Self.inputs()
        // Both readers are covered: capture inputs and labels inputs.
        let modes = try Set(files.map { try Data(contentsOf: $0).first.map { $0 & 1 } ?? 0 })
        #expect(modes == [0, 1])
    }

    @Test func everyCorpusInputKeepsTheInvariants() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rg-capture-replay-\(getpid()).bin").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for f in try Self.inputs() {
            let data = try Data(contentsOf: f)
            let failures = data.withUnsafeBytes { CaptureFuzzInvariants.check($0, scratch: scratch) }
            #expect(failures.isEmpty, "\(f.lastPathComponent): \(failures.prefix(5).joined(separator: "; "))")
        }
    }

    /// The checks can fail: readers that disagree are reported.
    @Test func readersThatDisagreeAreReported() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rg-capture-replay-x-\(getpid()).bin").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // A plain pcap file with one frame: the same reader twice agrees with itself...
        var file: [UInt8] = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]
        file += [1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]
        try Data(file).write(to: URL(fileURLWithPath: scratch))
        #expect(CaptureFuzzInvariants.compare(try CaptureReader(path: scratch), try CaptureReader(path: scratch, direct: false)).isEmpty)
        // ...and a reader of another file (one more frame) does not.
        let other = scratch + ".2"
        defer { try? FileManager.default.removeItem(atPath: other) }
        try Data(file + [2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]).write(to: URL(fileURLWithPath: other))
        #expect(CaptureFuzzInvariants.compare(try CaptureReader(path: scratch), try CaptureReader(path: other)).count == 1)
    }
}
