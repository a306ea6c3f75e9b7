import Testing
import Lab
import PacketParser
@testable import VerdictEngine

/// The scoring lab's RST floods as the tests generate them (seeds, spread, rates 500-5,000 a
/// second, IPv4 and IPv6), decided with the default policy as `score` decides them.
@Suite struct RSTFloodScenarioTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var seed: UInt64, rate: Double, spread: Double, ipv6Share: Double
        var testDescription: String { "seed \(seed), \(Int(rate))/s, spread \(spread), IPv6 \(ipv6Share)" }
    }

    static let cases: [Case] = [
        Case(seed: 1, rate: 500, spread: 1, ipv6Share: 0),
        Case(seed: 2, rate: 500, spread: 1, ipv6Share: 1),
        Case(seed: 3, rate: 1500, spread: 1, ipv6Share: 0.5),
        Case(seed: 4, rate: 3000, spread: 0.4, ipv6Share: 0.15),
        Case(seed: 5, rate: 5000, spread: 1, ipv6Share: 0),
        Case(seed: 6, rate: 5000, spread: 1, ipv6Share: 1),
        Case(seed: 7, rate: 5000, spread: 0.7, ipv6Share: 0.5),
    ]

    /// Frames by label and verdict, and the RSTs of `legit` frames.
    struct Tally {
        var passed: [FrameLabel: Int] = [:], dropped: [FrameLabel: Int] = [:]
        var legitRSTs = 0
        /// Inbound legitimate RSTs while the flood runs (18-30 s) on flows whose handshake the
        /// capture does not hold (the older sessions).
        var olderRSTsInFlood = 0
        func total(_ l: FrameLabel) -> Int { (passed[l] ?? 0) + (dropped[l] ?? 0) }
    }

    static func run(_ shape: RSTFloodShape, seed: UInt64, policy configure: (inout Policy) -> Void = { _ in }) -> Tally {
        var p = Policy()
        p.protected.insert(CIDR(LabAddresses.protectedV4)!)
        p.protected.insert(CIDR(LabAddresses.protectedV6)!)
        configure(&p)
        let engine = Engine(policy: p, seed: seed)
        let gen = ScenarioGenerator(scenario: Scenario(kind: .rstFlood), seed: seed, packets: 20_000, flood: shape)
        var tally = Tally()
        var handshakes = Set<String>()
        var packet = ParsedPacket()
        _ = gen.run { bytes, ts, label in
            PacketParser.parse(bytes, link: gen.link, into: &packet)
            let d = engine.decideObserved(packet, at: ts)
            if d.verdict == .drop { tally.dropped[label, default: 0] += 1 } else { tally.passed[label, default: 0] += 1 }
            // Client end first: the SYN's source, or the RST's (protected) destination.
            func flow(_ c: IPAddress, _ cp: UInt16, _ s: IPAddress, _ sp: UInt16) -> String { "\(c) \(cp) \(s) \(sp)" }
            if label == .legit && packet.flags.contains(.syn) && !packet.flags.contains(.ack) {
                handshakes.insert(flow(packet.source, packet.sourcePort, packet.destination, packet.destinationPort))
            }
            if label == .legit && packet.flags.isRST {
                tally.legitRSTs += 1
                let at = Double(ts - ScenarioGenerator.epoch) / 1e9
                let (c, cp, s, sp) = (packet.destination, packet.destinationPort, packet.source, packet.sourcePort)
                if (18...30).contains(at), LabAddresses.isProtected(c),
                   !handshakes.contains(flow(c, cp, s, sp)), !handshakes.contains(flow(s, sp, c, cp)) {
                    tally.olderRSTsInFlood += 1
                }
            }
        }
        return tally
    }

    /// The flood runs 18-30 s after the capture starts; sessions older than the capture end
    /// before it, during it (the case that lost 27-139 legitimate RSTs of ~400 when only
    /// handshakes were queued), or after it; a third of them send only in the first 5 s and
    /// then nothing until their abort. Every legitimate RST passes: refusals, closes and aborts
    /// of sessions seen, and those of the older sessions, learnt from the first packet their
    /// protected end sent (`learn_interval`).
    @Test(arguments: cases)
    func spreadFloodIsCutAndLegitimateRSTsPass(_ c: Case) {
        let shape = RSTFloodShape(rate: c.rate, spread: c.spread, ipv6Share: c.ipv6Share, olderFlows: 400,
                                  olderFlowEnds: [0...16, 18...30, 18...30, 45...70], olderIdleShare: 0.3)
        let t = Self.run(shape, seed: c.seed)
        let sent = t.total(.attackRst)
        let passed = t.passed[.attackRst] ?? 0
        #expect(sent > 0 && Double(passed) <= 0.2 * Double(sent), "\(c.testDescription): \(passed) of \(sent) passed")
        #expect(t.dropped[.legit] == nil, "\(c.testDescription): \(t.dropped[.legit] ?? 0) legitimate frames dropped")
        #expect(t.legitRSTs > 300)
        #expect(t.olderRSTsInFlood > 50, "\(c.testDescription): \(t.olderRSTsInFlood) RSTs of older sessions inside the flood")
    }
}

/// Blind resets on long-lived sessions (the lab's BGP, SSH and TLS sessions), with only BGP
/// guarded: `-D track_full_ports={ 179 }` on top of the default `track = handshake`.
@Suite struct GuardedSessionScenarioTests {
    @Test(arguments: [42, 7, 1234] as [UInt64])
    func blindResetsOnGuardedPortsAreDropped(_ seed: UInt64) {
        var p = Policy()
        p.protected.insert(CIDR(LabAddresses.protectedV4)!)
        p.protected.insert(CIDR(LabAddresses.protectedV6)!)
        p.trackFullPorts = [179...179]
        let engine = Engine(policy: p, seed: seed)
        let gen = ScenarioGenerator(scenario: Scenario(kind: .blindReset), seed: seed, packets: 40_000)
        var guardedResets = 0, guardedDropped = 0, legitDropped = 0, legit = 0, legitGuardedRSTs = 0
        var packet = ParsedPacket()
        _ = gen.run { bytes, ts, label in
            PacketParser.parse(bytes, link: gen.link, into: &packet)
            let d = engine.decideObserved(packet, at: ts)
            let bgp = packet.sourcePort == 179 || packet.destinationPort == 179
            switch label {
            case .attackBlindReset where bgp:
                guardedResets += 1
                if d.verdict == .drop { guardedDropped += 1 }
            case .legit:
                legit += 1
                if d.verdict == .drop { legitDropped += 1 }
                if bgp && packet.flags.isRST { legitGuardedRSTs += 1 }
            default: break
            }
        }
        #expect(guardedResets > 100)
        #expect(Double(guardedDropped) >= 0.99 * Double(guardedResets), "\(guardedDropped) of \(guardedResets) dropped")
        #expect(legitDropped == 0, "\(legitDropped) of \(legit) legitimate frames dropped")
    }
}
