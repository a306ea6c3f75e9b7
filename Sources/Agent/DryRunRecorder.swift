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

    /// What the pipeline counted, once its worker finished: a value the main thread can sum.
    func finish() -> DryRunTotals {
        pipeline.finish()
        return DryRunTotals(accepted: pipeline.accepted, wouldDrop: pipeline.dropped, reasons: pipeline.reasons)
    }

    @inline(__always)
    func observe(_ packet: ParsedPacket, at time: Nanoseconds, decision: Decision) {
        pipeline.observe(packet, at: time, decision: decision)
    }
}

/// One worker's dry-run figures at exit.
struct DryRunTotals: Sendable {
    var accepted: UInt64
    var wouldDrop: UInt64
    var reasons: [Reason: UInt64]
}
