import VerdictEngine

/// The kernel's per-victim counts for the Flowspec escalation: the agent adds a prefix under
/// attack to `flowspec_synack4/6` or `flowspec_rst4/6` (nft/reflectguard.nft) and reads the
/// elements' counters once a second. An armed prefix's flood is dropped before the queue, so
/// without these the escalation would see the flood end the moment the kernel took it over.
///
/// One libnftables context; not thread-safe: call from one thread (the escalation's queue).
public final class FlowspecCounters {
    private let ctx: NftContext

    public init() throws(NftError) { ctx = try NftContext() }

    public enum Vector: String, Sendable { case synack, rst }

    static func set(_ prefix: CIDR, _ vector: Vector) -> String {
        "flowspec_\(vector.rawValue)\(prefix.isIPv4 ? 4 : 6)"
    }

    private func run(_ what: String, _ cmd: String) throws(NftError) -> String {
        let r = ctx.run(cmd)
        guard r.ok else {
            throw NftError("\(what): " + r.errors.split(separator: "\n").prefix(2).joined(separator: " "), rulesError: false)
        }
        return r.output
    }

    /// Starts counting `prefix`'s attack packets (from zero), and for SYN-ACKs their source ports.
    public func watch(_ prefix: CIDR, _ vector: Vector) throws(NftError) {
        let s = Self.set(prefix, vector)
        // Add first: deleting a missing element fails. Then delete and add again, so a stale
        // element (a previous agent's) starts from zero.
        let element = "\(NftRuleset.family) \(NftRuleset.table) \(s) { \(prefix) }"
        var cmd = "add element \(element)\ndelete element \(element)\nadd element \(element)\n"
        // The prefix's port counts start from zero too: a port counted before this watch (an
        // earlier attack within the set's minute) would otherwise count against the new total.
        // Best effort: a table applied by an older version has no port sets, and the prefix's
        // own count matters more (its routes then match any port).
        if vector == .synack, let listing = try? run("reading the source ports", "list set \(NftRuleset.family) \(NftRuleset.table) \(Self.portSet(prefix))\n") {
            let ports = Self.portSet(prefix)
            for (p, port, _) in Self.parsePorts(listing) where p == prefix {
                cmd += "delete element \(NftRuleset.family) \(NftRuleset.table) \(ports) { \(Self.address(p)) . \(port) }\n"
            }
        }
        _ = try run("watching \(prefix)", cmd)
    }

    static func portSet(_ prefix: CIDR) -> String { "flowspec_sport\(prefix.isIPv4 ? 4 : 6)" }

    /// A prefix's address as nft writes it (an IPv4 address without the mapping).
    static func address(_ p: CIDR) -> String {
        p.description.split(separator: "/").first.map(String.init) ?? p.description
    }

    /// Source-port counts of the watched SYN-ACK prefixes of one family (4 or 6), per prefix (the
    /// rule keys them by the /24 or /64), with each prefix's SYN-ACK total read right after them:
    /// both count the same packets, so the total is never below the ports' sum, and it exceeds
    /// it only by the packets of the moment between the two listings (and those the bounded port
    /// set could not hold): a share taken from these can come out low, never high.
    public func readPorts(family: Int) throws(NftError) -> [CIDR: (perPort: [UInt16: UInt64], total: UInt64)] {
        let text = try run("reading the source-port counters", "list set \(NftRuleset.family) \(NftRuleset.table) flowspec_sport\(family)\n")
        let totals = try run("reading the flowspec counters", "list set \(NftRuleset.family) \(NftRuleset.table) flowspec_synack\(family)\n")
        var out: [CIDR: (perPort: [UInt16: UInt64], total: UInt64)] = [:]
        for (p, n) in Self.parse(totals) { out[p] = ([:], n) }
        for (p, port, n) in Self.parsePorts(text) where out[p] != nil { out[p]!.perPort[port, default: 0] += n }
        return out
    }

    /// The elements of a port set's listing: `elements = { 198.18.2.0 . 443 counter packets 3
    /// bytes 120 expires 59s, … }`, as (the /24 or /64, port, packets). nft prints the port as a
    /// number (no service names without `-S`); an element it printed otherwise is skipped.
    static func parsePorts(_ text: String) -> [(CIDR, UInt16, UInt64)] {
        guard let start = text.firstRange(of: "elements = {") else { return [] }
        let body = text[start.upperBound...].prefix { $0 != "}" }
        var out: [(CIDR, UInt16, UInt64)] = []
        for element in body.split(separator: ",") {
            let words = element.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            guard words.count >= 3, words[1] == ".", !words[0].contains("/"),
                  let p = CIDR("\(words[0])/\(words[0].contains(":") ? 64 : 24)"), let port = UInt16(words[2]),
                  let i = words.firstIndex(of: "packets"), i + 1 < words.count, let n = UInt64(words[i + 1]) else { continue }
            out.append((p, port, n))
        }
        return out
    }

    public func unwatch(_ prefix: CIDR, _ vector: Vector) throws(NftError) {
        let element = "\(NftRuleset.family) \(NftRuleset.table) \(Self.set(prefix, vector)) { \(prefix) }"
        _ = try run("unwatching \(prefix)", "add element \(element)\ndelete element \(element)\n")
    }

    /// Empties the six sets (at start: a previous agent's watches mean nothing now).
    public func clear() throws(NftError) {
        var cmd = ""
        for v in ["synack", "rst", "sport"] { for f in [4, 6] { cmd += "flush set \(NftRuleset.family) \(NftRuleset.table) flowspec_\(v)\(f)\n" } }
        _ = try run("clearing the flowspec sets", cmd)
    }

    /// Packets counted per watched prefix and vector, since each was watched. One `list set`
    /// per set: libnftables 1.0.6 refuses a second `list set` in the same buffer ("No such file
    /// or directory", its cache holds only the first set).
    public func read() throws(NftError) -> [CIDR: [Vector: UInt64]] {
        var out: [CIDR: [Vector: UInt64]] = [:]
        for v in [Vector.synack, .rst] {
            for f in [4, 6] {
                let text = try run("reading the flowspec counters",
                                   "list set \(NftRuleset.family) \(NftRuleset.table) flowspec_\(v.rawValue)\(f)\n")
                for (p, n) in Self.parse(text) { out[p, default: [:]][v] = n }
            }
        }
        return out
    }

    /// The elements of `nft list set` output with their packet counts:
    /// `elements = { 198.18.2.0/24 counter packets 3 bytes 120, … }`, over one or more lines.
    static func parse(_ text: String) -> [(CIDR, UInt64)] {
        guard let start = text.firstRange(of: "elements = {") else { return [] }
        let body = text[start.upperBound...].prefix { $0 != "}" }
        var out: [(CIDR, UInt64)] = []
        for element in body.split(separator: ",") {
            let words = element.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            guard let first = words.first, let prefix = CIDR(String(first)),
                  let i = words.firstIndex(of: "packets"), i + 1 < words.count, let n = UInt64(words[i + 1]) else { continue }
            out.append((prefix, n))
        }
        return out
    }
}
