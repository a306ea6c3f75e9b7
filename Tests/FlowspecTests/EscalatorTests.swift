import Testing
import PacketParser
import VerdictEngine
@testable import Flowspec

/// The escalation policy as a state machine: fed attack events and kernel rates with made-up
/// times, checked action by action.
struct EscalatorTests {
    static let protected = PrefixSet([CIDR("198.18.0.0/15")!, CIDR("2001:db8:2::/48")!])
    static func config(trigger: Double = 1000, hold: Double = 10, withdraw: Double = 60, maxRules: Int = 8) -> FlowspecConfig {
        FlowspecConfig(peer: IPAddress("192.0.2.2")!, peerAS: 64500, localAS: 64501, trigger: trigger, hold: hold,
                       withdrawAfter: withdraw, rate: 125_000, maxRules: maxRules, protected: protected)
    }
    static func target(_ p: String, _ v: AttackEvent.Vector = .synack) -> Escalator.Target {
        Escalator.Target(prefix: CIDR(p)!, vector: v)
    }

    static func announced(_ actions: [Escalator.Action]) -> [FlowspecRoute] {
        actions.compactMap { if case .announce(let r, _, _) = $0 { return r } else { return nil } }
    }

    @Test func announcesAfterTheHoldAndNotBefore() {
        var e = Escalator(config: Self.config())
        let t = Self.target("198.18.2.0/24")
        #expect(e.attack(.started, t, rate: 5000, now: 100) == [.watch(t)])
        for s in 1...9 { #expect(Self.announced(e.tick(now: 100 + Double(s), kernelRates: [t: 5000])).isEmpty) }
        let a = e.tick(now: 110, kernelRates: [t: 5000])
        #expect(Self.announced(a) == [FlowspecRoute(prefix: t.prefix, vector: .synack, rate: 125_000)])
        #expect(e.announced.count == 1)
        // Announced once.
        #expect(Self.announced(e.tick(now: 111, kernelRates: [t: 5000])).isEmpty)
    }

    @Test func theHoldCountsFromWhenTheKernelsMeasurementBegan() {
        var e = Escalator(config: Self.config(hold: 3))
        let t = Self.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 200, now: 100)   // the engine's rate is below the trigger
        #expect(Self.announced(e.tick(now: 101, kernelRates: [t: 4000], measuredSince: [t: 100])).isEmpty)
        #expect(Self.announced(e.tick(now: 102, kernelRates: [t: 4000], measuredSince: [t: 101])).isEmpty)
        #expect(Self.announced(e.tick(now: 103, kernelRates: [t: 4000], measuredSince: [t: 102])).count == 1)
    }

    @Test func nothingBelowTheTrigger() {
        var e = Escalator(config: Self.config())
        let t = Self.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 999, now: 0)
        for s in 1...100 { #expect(Self.announced(e.tick(now: Double(s), kernelRates: [t: 999])).isEmpty) }
        #expect(e.announced.isEmpty)
    }

    @Test func aDipBelowTheTriggerRestartsTheHold() {
        var e = Escalator(config: Self.config())
        let t = Self.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 0, now: 0)
        for s in 1...8 { _ = e.tick(now: Double(s), kernelRates: [t: 5000]) }
        _ = e.tick(now: 9, kernelRates: [t: 10])
        for s in 10...18 { #expect(Self.announced(e.tick(now: Double(s), kernelRates: [t: 5000])).isEmpty) }
        #expect(Self.announced(e.tick(now: 20, kernelRates: [t: 5000])).count == 1)
    }

    @Test func theKernelsCountKeepsAnArmedFloodAliveAfterTheEnginesSeeItEnd() {
        var e = Escalator(config: Self.config(withdraw: 30))
        let t = Self.target("2001:db8:2:7::/64")
        _ = e.attack(.started, t, rate: 5000, now: 0)
        for s in 1...10 { _ = e.tick(now: Double(s), kernelRates: [t: 5000]) }
        #expect(e.announced.count == 1)
        _ = e.attack(.ended, t, rate: 0, now: 11)
        for s in 12...100 { #expect(e.tick(now: Double(s), kernelRates: [t: 5000]).isEmpty) }
        #expect(e.announced.count == 1)
    }

    @Test func withdrawnAfterTheQuietTimeout() {
        var e = Escalator(config: Self.config(withdraw: 60))
        let t = Self.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 5000, now: 0)
        for s in 1...10 { _ = e.tick(now: Double(s), kernelRates: [t: 5000]) }
        _ = e.attack(.ended, t, rate: 0, now: 20)
        for s in 21...80 { #expect(e.tick(now: Double(s), kernelRates: [t: 0]).isEmpty, "second \(s)") }
        let a = e.tick(now: 81, kernelRates: [:])
        #expect(a.contains(.withdraw(FlowspecRoute(prefix: t.prefix, vector: .synack, rate: 125_000), quiet: 60)))
        #expect(a.contains(.unwatch(t)))
        #expect(e.announced.isEmpty && e.watched.isEmpty)
    }

    @Test(arguments: [("203.0.113.0/24", Escalator.RefusalReason.outsideProtected),
                      ("198.18.0.0/16", .tooWide),
                      ("0.0.0.0/0", .tooWide),
                      ("2001:db8::/32", .tooWide),
                      ("2001:db8:3::/64", .outsideProtected),
                      ("::/0", .tooWide)])
    func refused(prefix: String, reason: Escalator.RefusalReason) {
        var e = Escalator(config: Self.config(hold: 1))
        let t = Self.target(prefix)
        _ = e.attack(.started, t, rate: 50_000, now: 0)
        let a = e.tick(now: 1, kernelRates: [t: 50_000]) + e.tick(now: 2, kernelRates: [t: 50_000])
        let refusals = a.filter { if case .refuse(_, let r, _, _) = $0 { return r == reason } else { return false } }
        #expect(refusals.count == 1, "refused once: \(a)")
        #expect(Self.announced(a).isEmpty && e.announced.isEmpty)
    }

    @Test func neverPastMaxRulesAndASlotFreedGoesToAWaitingPrefix() {
        var e = Escalator(config: Self.config(hold: 1, withdraw: 5, maxRules: 2))
        let ts = ["198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"].map { Self.target($0) }
        for t in ts { _ = e.attack(.started, t, rate: 5000, now: 0) }
        var rates = Dictionary(uniqueKeysWithValues: ts.map { ($0, 5000.0) })
        var all: [Escalator.Action] = []
        for s in 1...5 { all += e.tick(now: Double(s), kernelRates: rates) }
        #expect(Self.announced(all).map(\.prefix.description) == ["198.18.1.0/24", "198.18.2.0/24"])
        #expect(all.filter { if case .refuse(_, .maxRules, _, _) = $0 { return true } else { return false } }.count == 1)
        // The first flood ends: its route goes after 5 quiet seconds, and the waiting one takes its slot.
        _ = e.attack(.ended, ts[0], rate: 0, now: 6)
        rates[ts[0]] = 0
        all = []
        for s in 6...12 { all += e.tick(now: Double(s), kernelRates: rates) }
        #expect(Self.announced(all).map(\.prefix.description) == ["198.18.3.0/24"])
        #expect(e.announced.map(\.prefix.description) == ["198.18.2.0/24", "198.18.3.0/24"])
    }

    @Test func anRSTAttackGetsItsOwnRoute() {
        var e = Escalator(config: Self.config(hold: 1))
        let s = Self.target("198.18.2.0/24"), r = Self.target("198.18.2.0/24", .rst)
        _ = e.attack(.started, s, rate: 5000, now: 0)
        _ = e.attack(.started, r, rate: 5000, now: 0)
        let a = e.tick(now: 1, kernelRates: [s: 5000, r: 5000]) + e.tick(now: 2, kernelRates: [s: 5000, r: 5000])
        #expect(Set(Self.announced(a).map(\.vector)) == [.synack, .rst])
        #expect(e.announced.map(\.description) == [
            "flow4 { dst 198.18.2.0/24; proto 6; tcp flags 0x4/0x4; } traffic-rate 125000",
            "flow4 { dst 198.18.2.0/24; proto 6; tcp flags 0x12/0x12; } traffic-rate 125000",
        ])
    }

    @Test func aFloodThatComesBackWhileThePrefixIsArmedIsSeenByTheKernelAlone() {
        var e = Escalator(config: Self.config(hold: 3), linger: 60)
        let t = Self.target("198.18.2.0/24")
        // A small attack: armed, then over for the engines (the kernel drops what follows).
        _ = e.attack(.started, t, rate: 300, now: 0)
        _ = e.attack(.ended, t, rate: 0, now: 10)
        var all: [Escalator.Action] = []
        for s in 11...40 { all += e.tick(now: Double(s), kernelRates: [t: 100]) }
        #expect(!all.contains(.unwatch(t)), "still watched while the prefix stays armed")
        for s in 41...45 { all += e.tick(now: Double(s), kernelRates: [t: 8000]) }
        #expect(Self.announced(all).count == 1)
        // Forgotten only a linger after the last activity.
        var late = Escalator(config: Self.config(), linger: 60)
        _ = late.attack(.started, t, rate: 300, now: 0)
        _ = late.attack(.ended, t, rate: 0, now: 10)
        #expect(late.tick(now: 69, kernelRates: [:]).isEmpty)
        #expect(late.tick(now: 70, kernelRates: [:]) == [.unwatch(t)])
    }
}
