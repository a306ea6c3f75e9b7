import Foundation
import Captures
import Lab
import PacketParser
import Testing
import TestSupport

/// `CaptureFileSource`: a file set read as one capture, the way `score` reads it (the CLI tests
/// check the command's output; these check the source itself, frame by frame).
@Suite struct FrameSourceTests {
    /// A generated capture and the same capture cut in the middle of a frame, made once for the
    /// suite's tests (they run in parallel).
    static func captures() throws -> (whole: String, cut: String, frames: [Int64]) { try made.get() }

    private static let made = Result { try make() }

    private static func make() throws -> (whole: String, cut: String, frames: [Int64]) {
        let whole = TestEnvironment.temporaryPath("frame-source-whole.pcap")
        let cut = TestEnvironment.temporaryPath("frame-source-cut.pcap")
        try ScenarioFiles.write(Scenario(name: "mixed")!, seed: 3, packets: 2_000, pcap: whole, labels: nil)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: whole))
        try bytes.prefix(bytes.count / 2 + 7).write(to: URL(fileURLWithPath: cut))
        let reader = try CaptureReader(path: whole)
        var times: [Int64] = []
        while let f = try reader.next() { times.append(f.timestamp) }
        return (whole, cut, times)
    }

    static func drain(_ source: inout CaptureFileSource) throws -> [Int64] {
        var packet = ParsedPacket()
        var times: [Int64] = []
        while let t = try source.nextFrame(into: &packet) { times.append(t) }
        return times
    }

    /// A cut file followed by a whole one: the cut file's frames up to the cut, one warning,
    /// then every frame of the next, numbered on from there.
    @Test func aCutFileInASetEndsWithAWarningAndTheNextFollows() throws {
        let (whole, cut, frames) = try Self.captures()
        var warnings: [String] = []
        var starts: [(Int, Int)] = []
        var source = CaptureFileSource(paths: [cut, whole], first: try CaptureReader(path: cut), filter: nil,
                                       warn: { warnings.append($0) }, fileStarted: { starts.append(($0, $1)) })
        let times = try Self.drain(&source)
        let beforeCut = times.count - frames.count
        #expect(beforeCut > 0 && beforeCut < frames.count)
        #expect(Array(times.prefix(beforeCut)) == Array(frames.prefix(beforeCut)))
        #expect(Array(times.suffix(frames.count)) == frames)
        #expect(warnings.count == 1)
        #expect(warnings.first?.hasSuffix("its frames before that are scored, continuing with the next file") == true)
        #expect(starts.map(\.0) == [0, 1])
        #expect(starts.map(\.1) == [1, beforeCut + 1])
        #expect(source.produced == times.count)
        #expect(source.linkTypeNames == ["EN10MB"])
    }

    /// One file cut short: the failure ends the stream (thrown) after the frames before it.
    @Test func aCutSingleFileThrowsAfterItsFrames() throws {
        let (_, cut, frames) = try Self.captures()
        var source = CaptureFileSource(paths: [cut], first: try CaptureReader(path: cut), filter: nil, warn: { _ in })
        var packet = ParsedPacket()
        var count = 0
        #expect(throws: (any Error).self) {
            while try source.nextFrame(into: &packet) != nil { count += 1 }
        }
        #expect(count > 0 && count < frames.count)
    }

    /// A filter passes over frames that do not match; a file that cannot be opened is left out
    /// with a warning.
    @Test func filterAndUnreadableFile() throws {
        let (whole, _, frames) = try Self.captures()
        let filter = try PacketFilter("ip6", link: .ethernet)
        var warnings: [String] = []
        var source = CaptureFileSource(paths: [whole, "/nonexistent/rg-frame-source.pcap"],
                                       first: try CaptureReader(path: whole), filter: filter,
                                       warn: { warnings.append($0) })
        let times = try Self.drain(&source)
        #expect(!times.isEmpty && times.count < frames.count)
        #expect(warnings.count == 1 && warnings[0].contains("continuing with the next file"))
    }
}
