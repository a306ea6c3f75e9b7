import Foundation
import Testing
import TestSupport

/// What `nft remove` leaves of the tables iptables-nft makes for ReflectGuard's xtables rules
/// (issue 11, item 8), in namespaces named `rgt-own-*`.
@Suite(.serialized) struct OwnershipNetnsTests {
    static let protect = ["--protect", "198.18.2.0/24", "--protect", "2001:db8:2::/64"]

    /// iptables-nft makes `table ip mangle` and `table ip6 mangle` for the first rule and never
    /// deletes them: `remove` does, once our rules leave them empty. A mangle table the operator
    /// uses keeps its rules and stays.
    @Test func removeDeletesTheMangleTablesItEmptiedAndKeepsUsedOnes() throws {
        if let why = NetnsLab.missing { TestEnvironment.unavailable(why); return }
        let n = try NetnsLab.Namespaces(["rgt-own-mangle"])
        let ns = n.names[0]
        for hook in ["router", "host"] {
            let apply = n.reflectguard(ns, ["nft", "apply", "--backend", "xt", "--hook", hook] + Self.protect)
            #expect(apply.status == 0, "\(apply.stderr)")
            #expect(try n.must(ns, ["nft", "list", "tables"]).stdout.contains("table ip mangle"))
            let remove = n.reflectguard(ns, ["nft", "remove"])
            #expect(remove.status == 0, "\(remove.stderr)")
            let tables = try n.must(ns, ["nft", "list", "tables"]).stdout
            #expect(tables.isEmpty, "\(hook): nothing left behind: \(tables)")
        }

        try n.must(ns, ["iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-s", "192.0.2.1", "-m", "comment",
                        "--comment", "operator", "-j", "MARK", "--set-mark", "1"])
        let apply = n.reflectguard(ns, ["nft", "apply", "--backend", "xt"] + Self.protect)
        #expect(apply.status == 0, "\(apply.stderr)")
        let remove = n.reflectguard(ns, ["nft", "remove"])
        #expect(remove.status == 0, "\(remove.stderr)")
        let tables = try n.must(ns, ["nft", "list", "tables"]).stdout
        #expect(tables.contains("table ip mangle"), "the operator's mangle table stays: \(tables)")
        #expect(!tables.contains("table ip6 mangle"), "the one only our rules used goes: \(tables)")
        let mangle = try n.must(ns, ["iptables-nft", "-t", "mangle", "-S"]).stdout
        #expect(mangle.contains("--comment operator") && !mangle.contains("reflectguard"), "\(mangle)")
    }
}
