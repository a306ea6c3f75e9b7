import Captures
import Foundation
import Lab
import PacketParser
@testable import Scoring
import Testing
import VerdictEngine
import TestSupport

/// `score` on two threads (engine on one, pipeline on the other) must give the one-thread result
/// bit for bit: the same report, the same session rows and verdict rows in the same order.
@Suite struct FrameScoringTests {
    static func policy() -> Policy { ReportTests.protectedPolicy() }

    struct Outcome: Equatable {
        var json: String
        var text: String
        var html: String
        var sessions: [String]
        var verdicts: [String]
        var error: String?
    }

    /// Scores `path` with small tables (so sessions are evicted and the victim and reflector
    /// tables overflow), stopping with an error after `cutAfter` frames when given; the
    /// pipeline's tables hashed with `hashSeed`.
    func score(_ path: String, threads: Int, cutAfter: Int? = nil, hashSeed: UInt64 = 1,
               policy: Policy = FrameScoringTests.policy()) throws -> Outcome {
        let reader = try CaptureReader(path: path)
        let pipeline = ScoringPipeline(policy: policy, sessionCapacity: 2048, reflectorCapacity: 500,
                                       victimCapacity: 50, hashSeed: hashSeed)
        var sessions: [String] = []
        var verdicts: [String] = []
        pipeline.sessions.sink = { sessions.append("\($0.client) \($0.clientPort) \($0.server) \($0.serverPort) \($0.start) \($0.end) \($0.packetsToServer) \($0.packetsToClient) \($0.endReason) \($0.connState) \($0.history)") }
        pipeline.verdictSink = { verdicts.append("\($0) \($1.verdict) \($1.reason)") }
        let engine = Engine(policy: policy, seed: 0)
        var read = 0
        var error: String?
        do {
            try FrameScoring.run(engine: engine, pipeline: pipeline, threads: threads) { packet in
                if let cutAfter, read == cutAfter { throw CaptureError("cut at \(read)") }
                guard let f = try reader.next() else { return nil }
                read += 1
                PacketParser.parse(f.bytes, link: reader.linkType, into: &packet)
                return f.timestamp
            }
        } catch let failure {
            error = "\(failure)"
        }
        pipeline.finish()
        let report = pipeline.report(source: "x", linkType: "EN10MB")
        return Outcome(json: JSONReport.render(report), text: TextReport.render(report), html: HTMLReport.render(report),
                       sessions: sessions, verdicts: verdicts, error: error)
    }

    static let capture: String = {
        let path = TestEnvironment.temporaryPath("frame-scoring-mixed.pcap")
        _ = try? ScenarioFiles.write(Scenario(name: "mixed")!, seed: 7, packets: 60_000, pcap: path, labels: nil)
        return path
    }()

    @Test func twoThreadsGiveTheOneThreadResult() throws {
        let one = try score(Self.capture, threads: 1)
        let two = try score(Self.capture, threads: 2)
        #expect(one.verdicts.count > 50_000)
        #expect(one.sessions.count > 2048)
        #expect(one.json.contains("\"victims_overflow\": ") && !one.json.contains("\"victims_overflow\": 0"))
        #expect(one == two)
    }

    /// The default thread count follows the CPUs the process may use (Linux CPU list syntax).
    @Test func cpuListsCount() {
        #expect(FrameScoring.allowedCount("0-3,6") == 5)
        #expect(FrameScoring.allowedCount("\t0\n") == 1)
        #expect(FrameScoring.allowedCount("0,2-2,4-5") == 4)
        #expect(FrameScoring.allowedCount("") == nil)
        #expect(FrameScoring.allowedCount("3-1") == nil)
        #expect(FrameScoring.allowedCount("x") == nil)
        #expect(FrameScoring.usableCores() >= 1)
    }

    /// A source that fails (a cut capture): every frame before it is scored, then the error
    /// comes back, on either path, including a cut in the middle of a batch.
    @Test(arguments: [1, 2]) func aFailingSourceScoresUpToTheFailure(threads: Int) throws {
        let b = FrameScoring.Handoff.batchSize
        for cut in [0, 1, b - 1, b, b + 1, 3 * b + 5] {
            let o = try score(Self.capture, threads: threads, cutAfter: cut)
            #expect(o.verdicts.count == cut)
            #expect(o.error == "cut at \(cut)")
        }
    }
}
