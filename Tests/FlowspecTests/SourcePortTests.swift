import Testing
import PacketParser
import VerdictEngine
@testable import Flowspec

/// The source ports of a SYN-ACK route: chosen from the kernel's per-port counts so the route is
/// as narrow as the flood allows and no narrower, and carried the same way into BIRD's syntax
/// and gobgp's arguments.
struct SourcePortTests {
    static let prefix = CIDR("198.18.2.0/24")!

    static func choose(_ perPort: [UInt16: UInt64], total: UInt64? = nil, maxPorts: Int = 4, share: Double = 0.95) -> SourcePortChoice {
        SourcePortChoice.choose(SourcePortCounts(total: total ?? perPort.values.reduce(0, +), perPort: perPort),
                                maxPorts: maxPorts, share: share)
    }

    @Test func oneServiceCarryingTheFloodIsMatched() {
        let c = Self.choose([443: 99_000, 80: 600, 22: 400])
        #expect(c.ports == [443] && c.decision == .dominant)
        #expect(c.share == 0.99 && c.sample == 100_000)
    }

    @Test func theFewestPortsThatReachTheShareAscending() {
        // 443 alone carries 60 %, with 80 70 %, with 22 96 %: three ports, listed ascending.
        let c = Self.choose([443: 60_000, 80: 10_000, 22: 26_000, 8080: 2_000, 25: 2_000])
        #expect(c.ports == [22, 80, 443] && c.decision == .dominant)
        #expect(abs(c.share - 0.96) < 1e-9)
    }

    @Test func exactlyTheShareIsEnoughAndJustBelowIsNot() {
        #expect(Self.choose([443: 95, 80: 5]).decision == .tooFewPackets)
        #expect(Self.choose([443: 9_500, 80: 500]).ports == [443])
        let below = Self.choose([443: 9_499, 80: 100, 81: 100, 82: 100, 83: 100, 84: 101], maxPorts: 1)
        #expect(below.ports.isEmpty && below.decision == .spread)
    }

    @Test func aFloodFromManyPortsGetsNoPortMatch() {
        // Random source ports: every port a sliver, the top four far below the share.
        var perPort: [UInt16: UInt64] = [:]
        for p in UInt16(1024)...UInt16(5119) { perPort[p] = 25 }
        let c = Self.choose(perPort)
        #expect(c.ports.isEmpty && c.decision == .spread && c.share < 0.01)
    }

    @Test func portsTheKernelCouldNotCountOnlyLowerTheShare() {
        // The bounded set held 443 and 80 only; the total counted every packet. 443 and 80 carry
        // 90 % of what was counted per port but the total says they carry 60 %: no match.
        let c = Self.choose([443: 50_000, 80: 10_000], total: 100_000)
        #expect(c.ports.isEmpty && c.decision == .spread && abs(c.share - 0.6) < 1e-9)
    }

    @Test func moreDominantPortsThanTheMaximumGetNoPortMatch() {
        let c = Self.choose([22: 20_000, 80: 20_000, 443: 20_000, 8080: 20_000, 25: 20_000])
        #expect(c.ports.isEmpty && c.decision == .spread)
        #expect(Self.choose([22: 20_000, 80: 20_000, 443: 20_000, 8080: 20_000, 25: 20_000], maxPorts: 5).ports == [22, 25, 80, 443, 8080])
    }

    @Test func offAndTooFewPackets() {
        #expect(Self.choose([443: 100_000], maxPorts: 0).decision == .off)
        #expect(Self.choose([443: 999]).decision == .tooFewPackets)
        #expect(SourcePortChoice.choose(nil, maxPorts: 4, share: 0.95).decision == .tooFewPackets)
    }

    @Test func aTieGoesToTheLowerPort() {
        #expect(Self.choose([443: 500, 80: 500], maxPorts: 1, share: 0.5).ports == [80])
    }

    @Test func theRouteInBIRDsSyntaxAndGobgpsArguments() {
        let r = FlowspecRoute(prefix: Self.prefix, vector: .synack, rate: 125_000, sourcePorts: [443, 80, 443])
        #expect(r.sourcePorts == [80, 443])
        // As BIRD prints what it received (checked against BIRD 2.0.12 in the lab).
        #expect(r.description == "flow4 { dst 198.18.2.0/24; proto 6; sport 80,443; tcp flags 0x12/0x12; } traffic-rate 125000")
        #expect(GoBGP.addArguments(r) == ["global", "rib", "-a", "ipv4-flowspec", "add", "match", "destination", "198.18.2.0/24",
                                          "protocol", "tcp", "source-port", "==80 ==443", "tcp-flags", "=SA",
                                          "then", "rate-limit", "125000"])
        #expect(GoBGP.deleteArguments(r) == ["global", "rib", "-a", "ipv4-flowspec", "del", "match", "destination", "198.18.2.0/24",
                                             "protocol", "tcp", "source-port", "==80 ==443", "tcp-flags", "=SA"])
        let six = FlowspecRoute(prefix: CIDR("2001:db8:2::/64")!, vector: .synack, rate: 0, sourcePorts: [22])
        #expect(six.description == "flow6 { dst 2001:db8:2::/64; next header 6; sport 22; tcp flags 0x12/0x12; } discard")
        // No ports: no source-port component at all.
        let any = FlowspecRoute(prefix: Self.prefix, vector: .synack, rate: 125_000)
        #expect(!GoBGP.addArguments(any).contains("source-port"))
        #expect(any.description == "flow4 { dst 198.18.2.0/24; proto 6; tcp flags 0x12/0x12; } traffic-rate 125000")
        #expect(r.sameMatch(FlowspecRoute(prefix: Self.prefix, vector: .synack, rate: 0, sourcePorts: [80, 443])))
        #expect(!r.sameMatch(any))
    }

    @Test func theEscalatorAnnouncesTheDominantPortsOfASynackFloodOnly() {
        var e = Escalator(config: EscalatorTests.config(hold: 2))
        let s = EscalatorTests.target("198.18.2.0/24"), r = EscalatorTests.target("198.18.2.0/24", .rst)
        _ = e.attack(.started, s, rate: 5000, now: 0)
        _ = e.attack(.started, r, rate: 5000, now: 0)
        let counts = SourcePortCounts(total: 10_000, perPort: [443: 9_700, 80: 300])
        var all: [Escalator.Action] = []
        for t in 1...2 {
            all += e.tick(now: Double(t), kernelRates: [s: 5000, r: 5000], sourcePorts: [s: counts, r: counts])
        }
        let routes = EscalatorTests.announced(all)
        #expect(routes.first { $0.vector == .synack }?.sourcePorts == [443])
        #expect(routes.first { $0.vector == .rst }?.sourcePorts == [], "an RST flood's sources are forged: no port match")
        let choice = all.compactMap { a -> SourcePortChoice? in
            if case .announce(let route, _, let c) = a, route.vector == .synack { return c } else { return nil }
        }.first
        #expect(choice?.decision == .dominant && choice?.share == 0.97)
    }

    @Test func withoutTheKernelsCountsNoPortMatch() {
        var e = Escalator(config: EscalatorTests.config(hold: 1))
        let t = EscalatorTests.target("198.18.2.0/24")
        _ = e.attack(.started, t, rate: 5000, now: 0)
        let a = e.tick(now: 1, kernelRates: [:]) + e.tick(now: 2, kernelRates: [:])
        #expect(EscalatorTests.announced(a).map(\.sourcePorts) == [[]])
    }
}
