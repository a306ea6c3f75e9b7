import Rules

/// ReflectGuard's xtables NFQUEUE rules, for kernels without the nft `queue` expression: the
/// NFQUEUE target still works there through nft_compat. Each rule carries the comment
/// `reflectguard`, which is how they are found again; no other xtables rule is ever touched.
enum Xtables {
    static let chains = ["FORWARD", "INPUT", "OUTPUT"]
    /// Where rules are added (`mangle`), and `filter` too when looking for old ones to remove.
    static let tables = ["mangle", "filter"]

    static var available: Bool { Spawn.find("iptables-nft") != nil && Spawn.find("ip6tables-nft") != nil }

    /// The tagged rules present now, as `iptables -S` prints them; `near` given, only those in
    /// the chains its rules are in (two children instead of twelve).
    static func tagged(near: [XtablesRule]? = nil) throws(NftError) -> [XtablesRule] {
        try scan(near: near).tagged
    }

    /// The tagged rules present now, and those an operator's rule comes before in their chain,
    /// with their rule numbers: `iptables-nft -t mangle -I FORWARD 1 … -j ACCEPT` ends the chain
    /// for what it matches before our NFQUEUE rule sees it, so the agent never judges it while the
    /// rule itself is still there.
    static func scan(near: [XtablesRule]? = nil) throws(NftError) -> (tagged: [XtablesRule], shadowed: [(rule: XtablesRule, number: Int)]) {
        var out: [XtablesRule] = []
        var shadowed: [(rule: XtablesRule, number: Int)] = []
        for v6 in [false, true] {
            let tool = v6 ? "ip6tables-nft" : "iptables-nft"
            guard Spawn.find(tool) != nil else { continue }
            for table in tables {
                for chain in chains where near?.contains(where: { $0.ipv6 == v6 && $0.table == table && $0.chain == chain }) ?? true {
                    let r = try Spawn.run([tool, "-t", table, "-S", chain])
                    guard r.status == 0 else {
                        throw NftError("\(tool) -t \(table) -S \(chain) failed: \(r.output.trimmedLine)", rulesError: false)
                    }
                    var number = 0
                    var foreignBefore = false
                    for line in r.output.split(separator: "\n") {
                        let words = line.split(separator: " ").map(String.init)
                        guard words.count > 2, words[0] == "-A", words[1] == chain else { continue }
                        number += 1
                        guard let c = words.firstIndex(of: "--comment"), c + 1 < words.count,
                              words[c + 1] == XtablesRule.tag else { foreignBefore = true; continue }
                        let rule = XtablesRule(ipv6: v6, table: table, chain: chain, arguments: Array(words[2...]))
                        out.append(rule)
                        if foreignBefore { shadowed.append((rule, number)) }
                    }
                }
            }
        }
        return (out, shadowed)
    }

    /// Puts a shadowed rule back in front: inserted at the top first, then the old copy (one
    /// number further down now) deleted by number, so the chain is never without it.
    static func moveToTop(_ rule: XtablesRule, from number: Int) throws(NftError) {
        try insert(rule)
        let r = try Spawn.run([rule.tool, "-t", rule.table, "-D", rule.chain, String(number + 1)])
        guard r.status == 0 else {
            throw NftError("\(rule.tool) -t \(rule.table) -D \(rule.chain) \(number + 1) failed: \(r.output.trimmedLine)", rulesError: false)
        }
    }

    /// Inserts at the top of the chain: an operator's earlier ACCEPT must not hide packets the
    /// agent has to judge.
    static func insert(_ rule: XtablesRule) throws(NftError) {
        let r = try Spawn.run([rule.tool, "-t", rule.table, "-I", rule.chain, "1"] + rule.arguments)
        guard r.status == 0 else {
            throw NftError("\(rule.commandLine) failed: \(r.output.trimmedLine)", rulesError: false)
        }
    }

    static func delete(_ rule: XtablesRule) throws(NftError) {
        let r = try Spawn.run([rule.tool, "-t", rule.table, "-D", rule.chain] + rule.arguments)
        guard r.status == 0 else {
            throw NftError("\(rule.tool) -t \(rule.table) -D \(rule.chain) failed: \(r.output.trimmedLine)", rulesError: false)
        }
    }

    /// Deletes `rules`, then each `mangle` table they leave empty. iptables-nft creates
    /// `table ip mangle` / `table ip6 mangle` (with the chain it needs) for the first rule and
    /// never deletes it again, so without this every apply-and-remove leaves two tables behind.
    static func delete(_ rules: [XtablesRule], ctx: NftContext) throws(NftError) {
        for r in rules { try delete(r) }
        for family in Set(rules.filter { $0.table == "mangle" }.map { $0.ipv6 ? "ip6" : "ip" }).sorted() {
            let listing = ctx.run("list table \(family) mangle")
            guard listing.ok, isEmptyMangle(listing.output, family: family) else { continue }
            // Best effort, and not atomic with the listing: a rule another program adds in the
            // microseconds between the two would go with the table.
            _ = ctx.run("delete table \(family) mangle")
        }
    }

    /// Whether a `mangle` table listing holds only what iptables-nft made for our rules: its
    /// built-in base chains, empty, with policy accept. A rule, a chain of the operator's, a set,
    /// a drop policy or a comment means somebody uses the table, and it stays.
    static func isEmptyMangle(_ listing: String, family: String) -> Bool {
        let builtIn = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
        for line in listing.split(separator: "\n") {
            let l = line.trimmingCharacters()
            if l.isEmpty || l == "}" || l == "table \(family) mangle {" { continue }
            if l.hasPrefix("chain "), l.hasSuffix(" {"), builtIn.contains(String(l.dropFirst(6).dropLast(2))) { continue }
            // OUTPUT is `type route` in iptables-nft's mangle, the others `type filter`.
            if l.hasPrefix("type "), l.contains(" hook "), l.hasSuffix("; policy accept;") { continue }
            return false
        }
        return true
    }
}

extension String {
    var trimmedLine: String {
        split(separator: "\n").map { $0.trimmingCharacters() }.joined(separator: "; ")
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
