import Testing
import Lab
import PacketParser
@testable import VerdictEngine

/// The lab's labelled scenarios, parsed by the real parser and decided as `score` decides them.
@Suite struct ScenarioTests {
    struct Tally {
        var total: [FrameLabel: Int] = [:]
        var dropped: [FrameLabel: Int] = [:]
        func drops(_ l: FrameLabel) -> Int { dropped[l] ?? 0 }
        func count(_ l: FrameLabel) -> Int { total[l] ?? 0 }
    }

    static func run(_ scenario: Scenario, seed: UInt64, track: Track = .handshake) -> Tally {
        var p = Policy()
        p.protected.insert(CIDR(LabAddresses.protectedV4)!)
        p.protected.insert(CIDR(LabAddresses.protectedV6)!)
        p.mode = scenario.ingressOnly ? .ingressOnly : .symmetric
        p.track = track
        let engine = Engine(policy: p, seed: seed)
        let gen = ScenarioGenerator(scenario: scenario, seed: seed, packets: 20_000)
        var tally = Tally()
        var packet = ParsedPacket()
        _ = gen.run { bytes, ts, label in
            PacketParser.parse(bytes, link: gen.link, into: &packet)
            let d = engine.decideObserved(packet, at: ts)
            tally.total[label, default: 0] += 1
            if d.verdict == .drop { tally.dropped[label, default: 0] += 1 }
        }
        return tally
    }

    @Test(arguments: Scenario.all.filter { !$0.ingressOnly })
    func symmetricDropsSpoofedSynacksAndNoLegit(scenario: Scenario) {
        let t = Self.run(scenario, seed: 42)
        #expect(t.drops(.legit) == 0, "\(scenario): \(t.drops(.legit)) of \(t.count(.legit)) legitimate packets dropped")
        let synacks = t.count(.attackSynack)
        if synacks > 0 {
            #expect(Double(t.drops(.attackSynack)) >= 0.999 * Double(synacks),
                    "\(scenario): \(t.drops(.attackSynack)) of \(synacks) spoofed SYN-ACKs dropped")
        }
    }

    /// With every packet of protected flows queued, blind resets are judged by RFC 5961
    /// windows: those outside the window are dropped, no legitimate packet is.
    @Test(arguments: [ScenarioKind.legit, .blindReset, .mixed])
    func fullTrackingJudgesBlindResets(kind: ScenarioKind) {
        let t = Self.run(Scenario(kind: kind), seed: 42, track: .full)
        #expect(t.drops(.legit) == 0)
        let resets = t.count(.attackBlindReset)
        if resets > 0 {
            // Measured, seed 42: 70% of the forged RSTs fall outside the receiver's window.
            #expect(Double(t.drops(.attackBlindReset)) >= 0.5 * Double(resets))
        }
    }

    /// Ingress-only cannot be exact; it must never drop legitimate traffic when there is no
    /// attack, and catch a good part of a carpet-bombing flood without dropping legitimate
    /// SYN-ACKs (measured, seed 42: recall 0.68, no legitimate drop; the first copy of a
    /// reflected SYN-ACK answering a SYN forged with full options to an ephemeral port carries
    /// no sign at all, so recall stays well below symmetric mode's).
    @Test func ingressOnlyNoFalseDropsWithoutAttack() {
        for seed: UInt64 in [42, 7] {
            let t = Self.run(Scenario(kind: .legit, ingressOnly: true), seed: seed)
            #expect(t.drops(.legit) == 0)
        }
    }

    @Test func ingressOnlyCatchesCarpetBombing() {
        let t = Self.run(Scenario(kind: .synackCarpet, ingressOnly: true), seed: 42)
        let synacks = t.count(.attackSynack)
        #expect(synacks > 0)
        let recall = Double(t.drops(.attackSynack)) / Double(max(1, synacks))
        let legitRate = Double(t.drops(.legit)) / Double(max(1, t.count(.legit)))
        print("ingress-only synack-carpet: recall \(recall), legit dropped \(t.drops(.legit)) of \(t.count(.legit))")
        #expect(recall >= 0.6)
        #expect(legitRate == 0)
    }
}
