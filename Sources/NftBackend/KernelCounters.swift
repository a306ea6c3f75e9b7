import Synchronization

/// The named counters of ReflectGuard's table (`counter drop_unsolicited_synack_v4 { }` and the
/// like in nft/reflectguard.nft), read for the agent's /metrics: what the kernel dropped without
/// the agent seeing a packet of it (armed victims, `kernel_enforce = always`, RST meters,
/// fragments).
///
/// A counter's name says what it counts: VERDICT_REASON_v4 or _v6, e.g.
/// `drop_rst_prefix_rate_limit_v6` → verdict `drop`, reason `rst-prefix-rate-limit`, family
/// `ipv6`. Names of another shape are not exported.
///
/// Read with one netlink dump per call (NFT_MSG_GETOBJ), never on the packet path. The kernel's
/// counters start again at 0 when the table is recreated (`nft flush ruleset` and the watchdog's
/// re-apply): what they had counted is carried over, so the exported totals only go up while the
/// agent runs.
public final class KernelCounters: Sendable {
    public struct Sample: Sendable, Equatable {
        public var verdict: String
        public var reason: String
        public var family: String
        public var packets: UInt64
        public var bytes: UInt64
    }

    private struct State {
        var generation: NftGeneration?
        /// name → what the kernel showed last, and what earlier incarnations of the counter counted.
        var last: [String: (packets: UInt64, bytes: UInt64)] = [:]
        var carried: [String: (packets: UInt64, bytes: UInt64)] = [:]
    }
    private let state = Mutex(State())
    private let table: String

    public init(table: String = NftRuleset.table) { self.table = table }

    /// verdict, reason and family of a counter name; nil for a name of another shape.
    public static func parse(_ name: String) -> (verdict: String, reason: String, family: String)? {
        let verdicts = ["drop_", "accept_"]
        guard let v = verdicts.first(where: { name.hasPrefix($0) }) else { return nil }
        let family: String
        if name.hasSuffix("_v4") { family = "ipv4" } else if name.hasSuffix("_v6") { family = "ipv6" } else { return nil }
        let reason = name.dropFirst(v.count).dropLast(3)
        guard !reason.isEmpty, reason.allSatisfy({ ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "_" }) else { return nil }
        return (String(v.dropLast()), reason.replacingOccurrences("_", "-"), family)
    }

    /// The totals now, sorted by name. With the table gone the last totals stay (the counts
    /// happened), so a dashboard shows no drop to zero while the watchdog puts the rules back.
    public func read() throws(NftError) -> [Sample] {
        try state.withLock { s throws(NftError) -> [Sample] in
            if s.generation == nil { s.generation = try NftGeneration() }
            if let now = try s.generation!.counters(table) {
                for (name, v) in now {
                    if let before = s.last[name], v.packets < before.packets || v.bytes < before.bytes {
                        let c = s.carried[name] ?? (0, 0)
                        s.carried[name] = (c.packets &+ before.packets, c.bytes &+ before.bytes)
                    }
                    s.last[name] = v
                }
                // A counter that vanished with the table but is not back (an older ruleset):
                // what it counted stays carried.
                for (name, before) in s.last where now[name] == nil {
                    let c = s.carried[name] ?? (0, 0)
                    s.carried[name] = (c.packets &+ before.packets, c.bytes &+ before.bytes)
                    s.last[name] = (0, 0)
                }
            }
            var out: [Sample] = []
            for name in Set(s.last.keys).union(s.carried.keys).sorted() {
                guard let p = Self.parse(name) else { continue }
                let l = s.last[name] ?? (0, 0), c = s.carried[name] ?? (0, 0)
                out.append(Sample(verdict: p.verdict, reason: p.reason, family: p.family,
                                  packets: l.packets &+ c.packets, bytes: l.bytes &+ c.bytes))
            }
            return out
        }
    }
}

private extension Substring {
    func replacingOccurrences(_ a: Character, _ b: Character) -> String {
        String(map { $0 == a ? b : $0 })
    }
}
