#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// Who applied ReflectGuard's table, recorded in the table itself: the comment of an empty chain
/// `owner`, which `nft list table inet reflectguard` shows beside the rules:
///
///     chain owner {
///         comment "reflectguard run pid=4242 since=2026-12-02T16:41:27Z"
///     }
///
/// A chain, not the table's own comment: the kernel takes a table's comment only when the table
/// is created and never changes it, while an agent that adopts a table must re-record it. Every
/// apply deletes and re-declares the table's chains in its transaction, so each apply records its
/// author atomically with its rules. The record says who applied the rules; whether that agent
/// still lives is the namespace lock's answer (a pid alone could have been reused).
public enum TableOwner: Equatable, Sendable, CustomStringConvertible {
    /// `reflectguard run`, which removes the table at exit.
    case agent(pid: Int32, since: String)
    /// `reflectguard nft apply`: stays until `reflectguard nft remove`.
    case nftApply(since: String)
    /// A table without a record: made by hand, or by a version that kept none.
    case unrecorded

    public static let chain = "owner"

    /// This process as an agent, started now.
    public static func thisAgent() -> TableOwner { .agent(pid: getpid(), since: utcNow()) }

    /// This process as `nft apply`, now.
    public static func nftApplyNow() -> TableOwner { .nftApply(since: utcNow()) }

    public var description: String {
        switch self {
        case .agent(let pid, let since): return "reflectguard run pid=\(pid) since=\(since)"
        case .nftApply(let since): return "reflectguard nft apply since=\(since)"
        case .unrecorded: return "no owner recorded"
        }
    }

    /// The comment a record is kept in; nil for `.unrecorded`, which has none.
    var comment: String? { self == .unrecorded ? nil : description }

    /// Parses a record's comment; anything else is `.unrecorded` (never somebody's pid).
    init(comment: String) {
        var fields: [String: String] = [:]
        for word in comment.split(separator: " ") {
            let kv = word.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        let since = fields["since"] ?? "?"
        if comment.hasPrefix("reflectguard run "), let p = fields["pid"].flatMap({ Int32($0) }), p > 0 {
            self = .agent(pid: p, since: since)
        } else if comment.hasPrefix("reflectguard nft apply") {
            self = .nftApply(since: since)
        } else {
            self = .unrecorded
        }
    }

    /// The owner record in a `list table` listing of ReflectGuard's table.
    init(listing: String) {
        var inOwner = false
        for line in listing.split(separator: "\n") {
            let l = line.trimmingCharacters()
            if l == "chain \(Self.chain) {" { inOwner = true; continue }
            guard inOwner else { continue }
            if l == "}" { break }
            if l.hasPrefix("comment \""), l.hasSuffix("\""), l.count >= 10 {
                self.init(comment: String(l.dropFirst(9).dropLast()))
                return
            }
        }
        self = .unrecorded
    }

    /// The commands that declare the record (appended to an apply's transaction, after the
    /// chains are re-declared), or nothing for `.unrecorded`.
    var declaration: String {
        guard let comment else { return "" }
        return "add chain \(NftRuleset.family) \(NftRuleset.table) \(Self.chain) { comment \"\(comment)\"; }\n"
    }

    static func utcNow() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return n > 0 ? String(nulTerminated: buf) : String(t)
    }
}
