import Foundation
import PacketParser

/// `--format text` (the default): what an operator reads in a terminal.
public enum TextReport {
    public static func render(_ r: ScoreReport) -> String {
        var s = "ReflectGuard score: \(r.source) (\(r.linkTypes.count > 1 ? r.linkTypes.joined(separator: ", ") : r.linkType))\n"
        if r.files.count > 1 { s += "  files     \(r.files.count), in time order: \(r.files.joined(separator: ", "))\n" }
        if let a = r.firstTimestamp, let b = r.lastTimestamp {
            s += "  time      \(utc(a)) → \(utc(b))  (\(duration(b - a)))\n"
        } else {
            s += "  time      (no frames)\n"
        }
        let p = r.packets
        s += "  packets   \(p.frames) frames: \(p.ipv4) IPv4, \(p.ipv6) IPv6, \(p.tcp) TCP"
            + " (SYN \(p.syn), SYN-ACK \(p.synack), RST \(p.rst), FIN \(p.fin)), \(p.malformed) malformed\n"
        s += "  verdicts  \(r.accepted) accept, \(r.dropped) drop (\(percent(r.dropped, r.accepted + r.dropped)))\n"

        s += section("Verdicts by reason")
        s += r.reasons.isEmpty ? "  none\n" : table(["reason", "frames"], r.reasons.map { [$0.0, String($0.1)] })

        s += section("Top victims (\(r.victimCount) protected hosts with drops"
                     + (r.victimsOverflow > 0 ? ", \(r.victimsOverflow) drops to hosts past the table" : "") + ")")
        if r.victims.isEmpty { s += "  none\n" } else {
            s += table(["address", "synack dropped", "rst dropped", "reflectors"],
                       r.victims.prefix(10).map { [$0.address, String($0.synackDropped), String($0.rstDropped), String($0.reflectors)] })
        }
        s += section("Top reflectors (\(r.reflectorCount) sources of dropped SYN-ACKs"
                     + (r.reflectorsOverflow > 0 ? ", \(r.reflectorsOverflow) drops from sources past the table" : "") + ")")
        if r.reflectors.isEmpty { s += "  none\n" } else {
            s += table(["address", "synack dropped"], r.reflectors.prefix(10).map { [$0.address, String($0.synackDropped)] })
        }

        s += section("Sessions: \(r.sessionsTotal)" + (r.sessionsEvicted > 0 ? " (\(r.sessionsEvicted) evicted from a full table)" : ""))
        s += "  end reasons  " + (r.endReasons.isEmpty ? "none" : r.endReasons.map { "\($0.0) \($0.1)" }.joined(separator: ", ")) + "\n"
        s += "  conn states  " + (r.connStates.isEmpty ? "none" : r.connStates.map { "\($0.0) \($0.1)" }.joined(separator: ", ")) + "\n"

        s += section("Attack timeline (per \(r.timelineWidth) s; seconds with drops)")
        let rows = r.timeline.enumerated().filter { $0.element.synackDropped + $0.element.rstDropped + $0.element.otherDropped > 0 }
        if rows.isEmpty { s += "  no drops\n" } else {
            let start = r.firstTimestamp ?? 0
            var lines = rows.map { (i, b) -> [String] in
                let t = start + Int64(i) * r.timelineWidth * 1_000_000_000
                return ["+\(Int64(i) * r.timelineWidth)s", clock(t), String(b.synackPassed), String(b.synackDropped),
                        String(b.rstPassed), String(b.rstDropped)]
            }
            if lines.count > 40 {
                let skipped = lines.count - 40
                lines = Array(lines.prefix(20)) + [["…", "\(skipped) more", "", "", "", ""]] + Array(lines.suffix(20))
            }
            s += table(["offset", "time (UTC)", "synack pass", "synack drop", "rst pass", "rst drop"], lines)
        }

        let rstAttacks = r.attacks.filter { $0.vector == .rst }.count
        s += section("Attacks (\(r.attacks.count - rstAttacks) SYN-ACK, \(rstAttacks) RST"
                     + (r.attacksLost > 0 ? ", \(r.attacksLost) events lost" : "") + ")")
        if r.attacks.isEmpty { s += "  none\n" } else {
            let start = r.firstTimestamp ?? 0
            var lines = r.attacks.map { a -> [String] in
                [a.vectorName, a.prefix, "+" + String(format: "%.1f", Double(a.start - start) / 1e9) + "s", clock(a.start),
                 a.end.map { duration($0 - a.start) } ?? "open", String(format: "%.0f", a.rate)]
            }
            if lines.count > 40 { lines = Array(lines.prefix(40)) + [["…", "\(r.attacks.count - 40) more", "", "", "", ""]] }
            s += table(["vector", "prefix", "offset", "time (UTC)", "lasted", "rate/s at start"], lines)
        }

        if let l = r.labels {
            s += section("Labels: precision \(String(format: "%.4f", l.precision)), recall \(String(format: "%.4f", l.recall))"
                         + " (drop vs attack-*)")
            s += table(["label", "accept", "drop"], l.perLabel.map { [$0.0, String($0.accept), String($0.drop)] })
        }
        return s
    }

    static func section(_ title: String) -> String { "\n\(title)\n" }

    /// Left-aligned first column, right-aligned numbers.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        var widths = [Int](repeating: 0, count: header.count)
        for row in all { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        var s = ""
        for row in all {
            var line = "  "
            for (i, c) in row.enumerated() where i < widths.count {
                let pad = String(repeating: " ", count: widths[i] - c.count)
                line += i == 0 ? c + pad : "  " + pad + c
            }
            while line.hasSuffix(" ") { line.removeLast() }
            s += line + "\n"
        }
        return s
    }

    static func percent(_ a: UInt64, _ b: UInt64) -> String {
        b == 0 ? "0%" : String(format: "%.2f%%", Double(a) * 100 / Double(b))
    }

    static func utc(_ ns: Int64) -> String {
        var t = time_t(ns / 1_000_000_000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d.%03d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1,
                      Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int((ns % 1_000_000_000) / 1_000_000))
    }

    static func clock(_ ns: Int64) -> String { String(utc(ns).dropFirst(11).prefix(8)) }

    static func duration(_ ns: Int64) -> String {
        String(format: "%.3f s", Double(ns) / 1e9)
    }
}
