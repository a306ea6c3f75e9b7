import PacketParser
import Scoring
import VerdictEngine

/// `run --dry-run`: each worker feeds what its engine would have done into its own scoring
/// pipeline (the same one `score` uses), so the summary at exit gives the same would-drop figures
/// `score` would give for the same packets.
final class DryRunRecorder {
    let pipeline: ScoringPipeline

    init(policy: Policy) {
        pipeline = ScoringPipeline(policy: policy)
    }

    @inline(__always)
    func observe(_ packet: ParsedPacket, at time: Nanoseconds, decision: Decision) {
        pipeline.observe(packet, at: time, decision: decision)
    }
}
