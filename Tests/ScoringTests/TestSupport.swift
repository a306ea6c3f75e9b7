import Foundation
import PacketParser
import Scoring
import Testing
import VerdictEngine
import Captures

/// A decoded TCP packet without bytes, for session-logic tests.
func tcp(_ src: String, _ sport: UInt16, _ dst: String, _ dport: UInt16, _ flags: TCPFlags,
         payload: UInt16 = 0) -> ParsedPacket {
    var p = ParsedPacket()
    p.network = src.contains(":") ? .ipv6 : .ipv4
    p.hasTCP = true
    p.ipProtocol = 6
    p.source = IPAddress(src)!
    p.destination = IPAddress(dst)!
    p.sourcePort = sport
    p.destinationPort = dport
    p.flags = flags
    p.payloadLength = payload
    return p
}

let second: Nanoseconds = 1_000_000_000

/// Scores a capture in-process with one fixed decision per frame and returns the pipeline and
/// every session record, in the order sessions closed.
func scoreCapture(_ path: String, policy: Policy = Policy()) throws -> (ScoringPipeline, [SessionRecord]) {
    let reader = try CaptureReader(path: path)
    let pipeline = ScoringPipeline(policy: policy)
    var records: [SessionRecord] = []
    pipeline.sessions.sink = { records.append($0) }
    let engine = Engine(policy: policy, seed: 0)
    var packet = ParsedPacket()
    while let f = try reader.next() {
        PacketParser.parse(f.bytes, link: reader.linkType, into: &packet)
        pipeline.observe(packet, at: f.timestamp, decision: engine.decideObserved(packet, at: f.timestamp))
    }
    pipeline.finish()
    return (pipeline, records)
}
