import Foundation
import PacketParser
import VerdictEngine

/// `--format json`: schema `reflectguard.score/1` of docs/output.md, written by hand so the keys come
/// out in the contract's order every time (JSONSerialization sorts or scrambles them).
public enum JSONReport {
    public static func render(_ r: ScoreReport) -> String {
        var o = JSONWriter()
        o.open("{")
        o.key("schema"); o.string("reflectguard.score/1")
        o.key("input"); o.open("{")
        o.key("source"); o.string(r.source)
        o.key("link_type"); o.string(r.linkType)
        // A pcapng file with interfaces of several link types, or a file set: all of them.
        if r.linkTypes.count > 1 {
            o.key("link_types"); o.open("[", inline: true)
            for t in r.linkTypes { o.element(); o.string(t) }
            o.close("]")
        }
        if r.files.count > 1 {
            o.key("files"); o.open("[")
            for f in r.files { o.element(); o.string(f) }
            o.close("]")
        }
        o.key("first_ts"); o.raw(r.firstTimestamp.map(seconds) ?? "null")
        o.key("last_ts"); o.raw(r.lastTimestamp.map(seconds) ?? "null")
        o.close("}")
        o.key("packets"); o.open("{")
        for (k, v) in r.packets.fields { o.key(k); o.raw(String(v)) }
        o.close("}")
        o.key("verdicts"); o.open("{")
        o.key("accept"); o.raw(String(r.accepted))
        o.key("drop"); o.raw(String(r.dropped))
        o.close("}")
        o.key("reasons"); o.open("{")
        for (k, v) in r.reasons { o.key(k); o.raw(String(v)) }
        o.close("}")
        o.key("sessions"); o.open("{")
        o.key("total"); o.raw(String(r.sessionsTotal))
        o.key("evicted"); o.raw(String(r.sessionsEvicted))
        o.key("end_reasons"); o.open("{")
        // Every PAN-OS reason and Zeek state appears, zero included, so consumers need no defaults.
        let ends = Dictionary(uniqueKeysWithValues: r.endReasons)
        for e in EndReason.allCases { o.key(e.rawValue); o.raw(String(ends[e.rawValue] ?? 0)) }
        o.close("}")
        o.key("conn_states"); o.open("{")
        let states = Dictionary(uniqueKeysWithValues: r.connStates)
        for c in ConnState.allCases { o.key(c.rawValue); o.raw(String(states[c.rawValue] ?? 0)) }
        o.close("}")
        o.close("}")
        o.key("victims"); o.open("[")
        for v in r.victims {
            o.element(); o.open("{", inline: true)
            o.key("address"); o.string(v.address)
            o.key("synack_dropped"); o.raw(String(v.synackDropped))
            o.key("rst_dropped"); o.raw(String(v.rstDropped))
            o.key("reflectors"); o.raw(String(v.reflectors))
            o.close("}")
        }
        o.close("]")
        // Totals behind the top lists: how many were tracked, and drops past each table's capacity.
        o.key("victims_total"); o.raw(String(r.victimCount))
        o.key("victims_overflow"); o.raw(String(r.victimsOverflow))
        o.key("reflectors_total"); o.raw(String(r.reflectorCount))
        o.key("reflectors_overflow"); o.raw(String(r.reflectorsOverflow))
        o.key("reflectors"); o.open("[")
        for x in r.reflectors {
            o.element(); o.open("{", inline: true)
            o.key("address"); o.string(x.address)
            o.key("synack_dropped"); o.raw(String(x.synackDropped))
            o.close("}")
        }
        o.close("]")
        o.key("attacks"); o.open("[")
        for a in r.attacks {
            o.element(); o.open("{", inline: true)
            o.key("vector"); o.string(a.vector.rawValue)
            o.key("prefix"); o.string(a.prefix)
            o.key("start_ts"); o.raw(JSONReport.seconds(a.start))
            o.key("end_ts"); o.raw(a.end.map(JSONReport.seconds) ?? "null")
            o.key("rate_pps"); o.raw(String(format: "%.1f", a.rate))
            o.close("}")
        }
        o.close("]")
        o.key("attack_events_lost"); o.raw(String(r.attacksLost))
        o.key("timeline"); o.open("{")
        o.key("bucket_seconds"); o.raw(String(r.timelineWidth))
        let series: [(String, KeyPath<TimelineBucket, UInt64>)] = [
            ("syn_passed", \.synPassed), ("synack_passed", \.synackPassed), ("synack_dropped", \.synackDropped),
            ("rst_passed", \.rstPassed), ("rst_dropped", \.rstDropped), ("other_dropped", \.otherDropped),
        ]
        for (name, kp) in series {
            o.key(name); o.raw("[" + r.timeline.map { String($0[keyPath: kp]) }.joined(separator: ",") + "]")
        }
        o.close("}")
        if let l = r.labels {
            o.key("labels"); o.open("{")
            o.key("per_label"); o.open("{")
            for (name, a, d) in l.perLabel {
                o.key(name); o.raw("{\"accept\": \(a), \"drop\": \(d)}")
            }
            o.close("}")
            o.key("precision"); o.raw(fraction(l.precision))
            o.key("recall"); o.raw(fraction(l.recall))
            o.close("}")
        }
        o.close("}")
        return o.text + "\n"
    }

    /// Seconds since the epoch with nanoseconds, trailing zeros trimmed to microseconds.
    static func seconds(_ ns: Nanoseconds) -> String {
        let s = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
        let frac = ns - s * 1_000_000_000
        var f = String(frac)
        f = String(repeating: "0", count: 9 - f.count) + f
        while f.count > 6 && f.hasSuffix("0") { f.removeLast() }
        return "\(s).\(f)"
    }

    static func fraction(_ x: Double) -> String {
        x.isFinite ? String(format: "%.6f", x) : "null"
    }
}

/// A small pretty-printing JSON writer that keeps insertion order.
public struct JSONWriter {
    private(set) var text = ""
    private var depth = 0
    private var first = [true]
    private var inlineDepth = Int.max

    mutating func open(_ bracket: String, inline: Bool = false) {
        text += bracket
        depth += 1
        first.append(true)
        if inline && inlineDepth == .max { inlineDepth = depth }
    }

    mutating func close(_ bracket: String) {
        let empty = first.removeLast()
        depth -= 1
        if !empty { newline() }
        text += bracket
        if depth < inlineDepth { inlineDepth = .max }
    }

    private mutating func newline() {
        if depth + 1 >= inlineDepth && inlineDepth != .max { text += " "; return }
        text += "\n" + String(repeating: "  ", count: depth)
    }

    private mutating func separator() {
        if first[first.count - 1] { first[first.count - 1] = false } else { text += "," }
        newline()
    }

    mutating func key(_ k: String) {
        separator()
        text += JSONWriter.quote(k) + ": "
    }

    /// Starts an array element.
    mutating func element() { separator() }

    mutating func string(_ s: String) { text += JSONWriter.quote(s) }
    mutating func raw(_ s: String) { text += s }

    /// A JSON string literal (RFC 8259 §7); the agent's log lines use it too.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
