import Testing
import PacketParser
import VerdictEngine
@testable import Flowspec

/// A reload's Flowspec policy applied to a running escalation: what stays announced is what the
/// new policy allows, and nothing of the old policy stays unseen.
struct ReconfigureTests {
    static func running(_ prefixes: [String], ports: SourcePortCounts? = nil) -> Escalator {
        var e = Escalator(config: EscalatorTests.config(hold: 1))
        let ts = prefixes.map { EscalatorTests.target($0) }
        for t in ts { _ = e.attack(.started, t, rate: 5000, now: 0) }
        let rates = Dictionary(uniqueKeysWithValues: ts.map { ($0, 5000.0) })
        let counts = ports.map { p in Dictionary(uniqueKeysWithValues: ts.map { ($0, p) }) } ?? [:]
        for s in 1...2 { _ = e.tick(now: Double(s), kernelRates: rates, sourcePorts: counts) }
        return e
    }

    static func config(rate: Double = 125_000, maxRules: Int = 8, maxPorts: Int = 4, protected: [String] = ["198.18.0.0/15", "2001:db8:2::/48"]) -> FlowspecConfig {
        var c = EscalatorTests.config(hold: 1)
        c.rate = rate; c.maxRules = maxRules; c.maxPorts = maxPorts
        c.protected = PrefixSet(protected.map { CIDR($0)! })
        return c
    }

    @Test func theSamePolicyChangesNothing() {
        var e = Self.running(["198.18.2.0/24"])
        #expect(e.reconfigure(Self.config()).isEmpty)
        #expect(e.announced.count == 1)
    }

    @Test func aPrefixNoLongerProtectedIsWithdrawn() {
        var e = Self.running(["198.18.2.0/24", "198.19.5.0/24"])
        let before = e.announced
        let a = e.reconfigure(Self.config(protected: ["198.18.2.0/24"]))
        #expect(a == [.retract(before[1], reason: "outside the protected networks")])
        #expect(e.announced.map(\.prefix.description) == ["198.18.2.0/24"])
        // The flood goes on: it is refused from now on, once, and never announced again.
        var later: [Escalator.Action] = []
        let t = EscalatorTests.target("198.19.5.0/24")
        for s in 3...10 { later += e.tick(now: Double(s), kernelRates: [t: 5000, EscalatorTests.target("198.18.2.0/24"): 5000]) }
        #expect(EscalatorTests.announced(later).isEmpty)
        #expect(later.filter { if case .refuse(_, .outsideProtected, _, _) = $0 { return true } else { return false } }.count == 1)
    }

    @Test func aNewActionReplacesTheRouteInPlace() {
        var e = Self.running(["198.18.2.0/24"], ports: SourcePortCounts(total: 10_000, perPort: [443: 10_000]))
        let old = e.announced[0]
        #expect(old.sourcePorts == [443])
        let a = e.reconfigure(Self.config(rate: 0))
        let new = FlowspecRoute(prefix: old.prefix, vector: .synack, rate: 0, sourcePorts: [443])
        guard case .replace(let was, let now, _)? = a.first, a.count == 1 else { Issue.record("\(a)"); return }
        #expect(was == old && now == new && was.sameMatch(now))
        #expect(e.announced == [new])
    }

    @Test func portsOffGivesARouteWithoutPorts() {
        var e = Self.running(["198.18.2.0/24"], ports: SourcePortCounts(total: 10_000, perPort: [443: 10_000]))
        let a = e.reconfigure(Self.config(maxPorts: 0))
        guard case .replace(let was, let now, let ports)? = a.first else { Issue.record("\(a)"); return }
        #expect(was.sourcePorts == [443] && now.sourcePorts.isEmpty && !was.sameMatch(now) && ports.decision == .off)
    }

    @Test func fewerSlotsWithdrawTheRoutesPastThem() {
        var e = Self.running(["198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"])
        let a = e.reconfigure(Self.config(maxRules: 1))
        #expect(a.count == 2 && a.allSatisfy { if case .retract(_, let why) = $0 { return why.contains("flowspec_max_rules") } else { return false } })
        #expect(e.announced.map(\.prefix.description) == ["198.18.1.0/24"])
    }

    @Test func onlyThePolicyMayChangeUnderARunningSession() {
        let c = Self.config()
        var other = c
        other.rate = 0; other.trigger = 5; other.maxPorts = 0
        #expect(c.sameSession(as: other))
        for change in [{ (x: inout FlowspecConfig) in x.peerAS = 1 }, { $0.localAS = 1 }, { $0.peer = IPAddress("192.0.2.9")! },
                       { $0.routerID = IPAddress("192.0.2.1")! }, { $0.speaker = .external(api: "127.0.0.1:50051") }] {
            var x = c
            change(&x)
            #expect(!c.sameSession(as: x))
        }
    }
}
