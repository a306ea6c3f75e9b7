import Testing
import PacketParser
import VerdictEngine
@testable import Flowspec

/// An announced route's source ports follow its flood: judged again every few seconds on what
/// the kernel counted since the last look, and replaced only once they no longer carry the flood.
struct PortReviewTests {
    static func review(_ announced: [UInt16], _ perPort: [UInt16: UInt64], total: UInt64? = nil) -> SourcePortChoice? {
        SourcePortChoice.review(announced: announced, recent: SourcePortCounts(total: total ?? perPort.values.reduce(0, +), perPort: perPort),
                                maxPorts: 4, share: 0.95)
    }

    /// Random source ports, `each` packets apiece.
    static func spread(_ each: UInt64) -> [UInt16: UInt64] {
        Dictionary(uniqueKeysWithValues: (UInt16(1024)...UInt16(2047)).map { ($0, each) })
    }

    @Test func whatWasCountedSinceAnEarlierLook() {
        let then = SourcePortCounts(total: 10_000, perPort: [443: 9_000, 80: 1_000, 22: 50])
        let now = SourcePortCounts(total: 16_000, perPort: [443: 9_000, 80: 1_500, 22: 30, 8080: 400])
        let d = now.since(then)
        // 443 got nothing since; 22 was forgotten after a quiet minute and counted 30 afresh.
        #expect(d == SourcePortCounts(total: 6_000, perPort: [80: 500, 22: 30, 8080: 400]))
        // The prefix watched anew: its total started again from zero.
        #expect(SourcePortCounts(total: 2_000, perPort: [443: 2_000]).since(then).total == 2_000)
    }

    @Test func portsThatStillCarryTheFloodAreKept() {
        #expect(Self.review([443], [443: 9_600, 80: 400]) == nil)
        #expect(Self.review([80, 443], [443: 5_000, 80: 4_600, 22: 400]) == nil)
        // Exactly the share keeps them: only falling below it replaces them.
        #expect(Self.review([443], [443: 9_500, 80: 500]) == nil)
    }

    @Test func tooFewPacketsSinceTheLastLookKeepThePorts() {
        #expect(Self.review([443], [80: 999]) == nil)
        #expect(Self.review([443], [:], total: 0) == nil)
    }

    @Test func aFloodMovedToRandomPortsLosesThePortMatch() {
        let next = Self.review([443], Self.spread(25).merging([443: 100]) { $1 })
        #expect(next?.ports == [] && next?.decision == .spread)
        #expect(next.map { $0.share < 0.01 } == true)
    }

    @Test func aFloodMovedToAnotherServiceGetsItsPort() {
        #expect(Self.review([443], [80: 9_800, 443: 200])?.ports == [80])
        // 443 with 80 now: both, since 443 alone fell below the share.
        #expect(Self.review([443], [443: 6_000, 80: 3_900, 22: 100])?.ports == [80, 443])
    }

    @Test func aRouteWithoutPortsIsNeverNarrowed() {
        #expect(Self.review([], [443: 10_000]) == nil)
    }

    /// An escalator with a `sport 443` route for 198.18.2.0/24 announced at 2 s, and the
    /// counts it was announced on.
    static func announcedOn443() -> (Escalator, Escalator.Target, SourcePortCounts) {
        var e = Escalator(config: EscalatorTests.config(hold: 2))
        let t = EscalatorTests.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 5000, now: 0)
        let counts = SourcePortCounts(total: 10_000, perPort: [443: 10_000])
        for s in 1...2 { _ = e.tick(now: Double(s), kernelRates: [t: 5000], sourcePorts: [t: counts]) }
        #expect(e.announced.map(\.sourcePorts) == [[443]])
        return (e, t, counts)
    }

    static func replacements(_ a: [Escalator.Action]) -> [(FlowspecRoute, FlowspecRoute, SourcePortChoice, String)] {
        a.compactMap { if case .replace(let old, let new, let ports, let reason) = $0 { (old, new, ports, reason) } else { nil } }
    }

    @Test func theEscalatorReplacesTheRouteOnceTheFloodMovesOffItsPorts() {
        var (e, t, counts) = Self.announcedOn443()
        #expect(e.portsDue(now: 6).isEmpty && e.portsDue(now: 2 + Escalator.portReview) == [t])
        // The flood moves to random ports at once: 5,000 packets a second, none from 443.
        var all: [(Double, Escalator.Action)] = []
        for s in 3...12 {
            let now = Double(s)
            counts.total += 5_000
            for p in UInt16(1024)...UInt16(1523) { counts.perPort[p, default: 0] += 10 }
            all += e.tick(now: now, kernelRates: [t: 5000], sourcePorts: [t: counts]).map { (now, $0) }
        }
        let r = Self.replacements(all.map(\.1))
        #expect(r.count == 1, "replaced once, and the route without ports is not looked at again")
        guard let (old, new, ports, reason) = r.first else { return }
        #expect(all.first { if case .replace = $0.1 { true } else { false } }?.0 == 2 + Escalator.portReview)
        #expect(old.sourcePorts == [443] && new.sourcePorts.isEmpty && ports.decision == .spread)
        #expect(reason == "source ports moved: 443 carried 0.0 % of 25000 packets in the last 5 s")
        #expect(e.announced == [new])
        #expect(e.portsDue(now: 20).isEmpty)
    }

    @Test func aFloodThatStaysOnItsPortsNeverReplacesTheRoute() {
        var (e, t, counts) = Self.announcedOn443()
        var all: [Escalator.Action] = []
        for s in 3...40 {
            // Mostly 443, with a few strays: 96 % stays above the share.
            counts.total += 5_000
            counts.perPort[443, default: 0] += 4_800
            counts.perPort[UInt16(1024 + s), default: 0] += 200
            all += e.tick(now: Double(s), kernelRates: [t: 5000], sourcePorts: [t: counts])
        }
        #expect(Self.replacements(all).isEmpty)
        #expect(e.announced.map(\.sourcePorts) == [[443]])
    }

    @Test func portsAreJudgedOnlyWhileTheFloodGoesOnAndOnFreshCounts() {
        var (e, t, counts) = Self.announcedOn443()
        counts.total += 50_000
        counts.perPort[80] = 50_000
        _ = e.attack(.ended, t, rate: 0, now: 9)
        // Below the trigger: the route waits for its withdrawal, its ports are not judged.
        #expect(Self.replacements(e.tick(now: 10, kernelRates: [t: 10], sourcePorts: [t: counts])).isEmpty)
        // Above it but without counts this tick: nothing to judge on.
        #expect(Self.replacements(e.tick(now: 11, kernelRates: [t: 5000])).isEmpty)
        let r = Self.replacements(e.tick(now: 12, kernelRates: [t: 5000], sourcePorts: [t: counts]))
        #expect(r.map(\.1.sourcePorts) == [[80]])
    }
}
