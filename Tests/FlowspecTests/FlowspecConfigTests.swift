import Testing
import PacketParser
import Rules
import VerdictEngine
@testable import Flowspec

/// The flowspec_* defines: read through the same resolution every command uses, refused where
/// they cannot work, and what gobgpd and its CLI are told.
struct FlowspecConfigTests {
    static func resolve(_ defines: [String]) throws -> ResolvedRules {
        try RulesConfig.resolve(rules: .embedded, protect: ["198.18.2.0/24", "2001:db8:2::/64"], defines: defines)
    }

    static let peer = ["flowspec_peer=192.0.2.2", "flowspec_peer_as=64500", "flowspec_local_as=64501"]

    @Test func offByDefault() throws {
        let r = try Self.resolve([])
        #expect(try FlowspecConfig(values: r.values, protected: r.policy.protected) == nil)
    }

    @Test func defaultsWithAPeer() throws {
        let r = try Self.resolve(Self.peer)
        let c = try #require(try FlowspecConfig(values: r.values, protected: r.policy.protected))
        #expect(c.peer == IPAddress("192.0.2.2")!)
        #expect(c.peerAS == 64500 && c.localAS == 64501)
        #expect(c.trigger == 100_000 && c.hold == 10 && c.withdrawAfter == 300)
        // The default action lets some through; discard only when asked for.
        #expect(c.rate == 125_000)
        #expect(c.maxRules == 8 && c.widestV4 == 24 && c.widestV6 == 48)
        #expect(c.speaker == .gobgpd && c.routerID == nil)
        let d = try Self.resolve(Self.peer + ["flowspec_rate=0", "flowspec_peer=2001:db8:3::2", "flowspec_router_id=192.0.2.1",
                                              "flowspec_speaker=external", "flowspec_api=\"127.0.0.1:50051\""])
        let e = try #require(try FlowspecConfig(values: d.values, protected: d.policy.protected))
        #expect(e.rate == 0 && e.peer == IPAddress("2001:db8:3::2")! && e.routerID == IPAddress("192.0.2.1")!)
        #expect(e.speaker == .external(api: "127.0.0.1:50051"))
        #expect(FlowspecRoute(prefix: CIDR("198.18.2.0/24")!, vector: .synack, rate: e.rate).action == "discard")
    }

    @Test(arguments: [(["flowspec_peer=192.0.2.2", "flowspec_local_as=1"], "flowspec_peer_as"),
                      (["flowspec_peer=192.0.2.2", "flowspec_peer_as=1"], "flowspec_local_as"),
                      (peer + ["flowspec_speaker=external"], "flowspec_api")])
    func incompleteCombinations(defines: [String], define: String) throws {
        let r = try Self.resolve(defines)
        #expect(throws: FlowspecConfigError.self) { try FlowspecConfig(values: r.values, protected: r.policy.protected) }
        do { _ = try FlowspecConfig(values: r.values, protected: r.policy.protected) } catch { #expect(error.define == define) }
    }

    @Test(arguments: ["flowspec_peer=192.0.2.0/24", "flowspec_peer=peer.example", "flowspec_peer_as=4294967296",
                      "flowspec_router_id=2001:db8::1", "flowspec_trigger=0", "flowspec_hold=10", "flowspec_rate=-1",
                      "flowspec_max_rules=0", "flowspec_widest_v4=0", "flowspec_widest_v4=7", "flowspec_widest_v6=0",
                      "flowspec_speaker=bird", "flowspec_api=127.0.0.1:50051"])
    func refusedValues(define: String) {
        #expect(throws: RulesError.self) { try Self.resolve([define]) }
    }

    @Test func gobgpdConfigurationAndCommands() {
        let c = FlowspecConfig(peer: IPAddress("192.0.2.2")!, peerAS: 64500, localAS: 64501,
                               protected: PrefixSet([CIDR("198.18.2.0/24")!]))
        let toml = GoBGP.configuration(c, routerID: IPAddress("192.0.2.1")!)
        for line in ["as = 64501", "router-id = \"192.0.2.1\"", "port = -1", "neighbor-address = \"192.0.2.2\"",
                     "peer-as = 64500", "afi-safi-name = \"ipv4-flowspec\"", "afi-safi-name = \"ipv6-flowspec\""] {
            #expect(toml.contains(line), "\(line) in \(toml)")
        }
        #expect(!toml.contains("graceful-restart"))
        let v4 = FlowspecRoute(prefix: CIDR("198.18.2.0/24")!, vector: .synack, rate: 125_000)
        #expect(GoBGP.addArguments(v4) == ["global", "rib", "-a", "ipv4-flowspec", "add", "match", "destination", "198.18.2.0/24",
                                           "protocol", "tcp", "tcp-flags", "=SA", "then", "rate-limit", "125000"])
        let v6 = FlowspecRoute(prefix: CIDR("2001:db8:2::/64")!, vector: .rst, rate: 0)
        #expect(GoBGP.addArguments(v6) == ["global", "rib", "-a", "ipv6-flowspec", "add", "match", "destination", "2001:db8:2::/64",
                                           "protocol", "tcp", "tcp-flags", "=R", "then", "discard"])
        #expect(GoBGP.deleteArguments(v6) == ["global", "rib", "-a", "ipv6-flowspec", "del", "match", "destination", "2001:db8:2::/64",
                                              "protocol", "tcp", "tcp-flags", "=R"])
        #expect(v6.description == "flow6 { dst 2001:db8:2::/64; next header 6; tcp flags 0x4/0x4; } discard")
        #expect(GoBGP.sessionState("BGP neighbor is 192.0.2.2, remote AS 64500\n  BGP state = ESTABLISHED, up for 00:00:15\n") == "established")
        #expect(GoBGP.sessionState("BGP state = ACTIVE\n") == "active")
        #expect(GoBGP.sessionState("garbage") == nil)
    }

    @Test func refusalRules() {
        let c = FlowspecConfig(peer: IPAddress("192.0.2.2")!, peerAS: 1, localAS: 2, widestV4: 24, widestV6: 48,
                               protected: PrefixSet([CIDR("198.18.2.0/24")!, CIDR("2001:db8:2::/64")!]))
        #expect(c.refusal(CIDR("198.18.2.0/24")!) == nil)
        #expect(c.refusal(CIDR("198.18.2.128/25")!) == nil)
        #expect(c.refusal(CIDR("2001:db8:2::/64")!) == nil)
        #expect(c.refusal(CIDR("0.0.0.0/0")!) != nil)
        #expect(c.refusal(CIDR("::/0")!) != nil)
        #expect(c.refusal(CIDR("198.18.0.0/16")!) != nil)
        #expect(c.refusal(CIDR("198.18.3.0/24")!) != nil)
        // A protected network inside the prefix does not make the prefix protected.
        #expect(c.refusal(CIDR("2001:db8::/48")!) != nil)
    }
}
