import Foundation
import PacketParser

/// `--format html`: one self-contained file (inline CSS and SVG, no scripts, no external assets),
/// so it opens offline and can be mailed as it is.
public enum HTMLReport {
    public static func render(_ r: ScoreReport) -> String {
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <title>ReflectGuard score: \(esc(r.source))</title>
        <style>
        body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;background:#fff}
        h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
        .sub{color:#667;font-size:13px}
        .cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}
        .card{border:1px solid #dde;border-radius:8px;padding:10px 14px;min-width:130px}
        .card b{display:block;font-size:20px} .card span{color:#667;font-size:12px}
        table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eef;text-align:right}
        td:first-child,th:first-child{text-align:left} th{color:#445;font-weight:600}
        .grid{display:grid;grid-template-columns:1fr 1fr;gap:24px}
        svg text{font-size:11px;fill:#445}
        .legend{font-size:12px;color:#445} .sw{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
        </style></head><body>
        <h1>ReflectGuard score</h1>
        <div class="sub">\(esc(r.source)) · \(esc(r.linkType)) · \(timeRange(r))</div>

        """
        let p = r.packets
        h += "<div class=\"cards\">"
        for (label, value) in [("frames", String(p.frames)), ("TCP", String(p.tcp)), ("SYN-ACK", String(p.synack)),
                               ("RST", String(p.rst)), ("accepted", String(r.accepted)), ("dropped", String(r.dropped)),
                               ("sessions", String(r.sessionsTotal)), ("victims", String(r.victimCount))] {
            h += "<div class=\"card\"><b>\(value)</b><span>\(label)</span></div>"
        }
        h += "</div>\n"

        h += "<h2>SYN-ACK and RST rates over time (per \(r.timelineWidth) s)</h2>\n"
        h += legend([("passed", passColor), ("dropped", dropColor)])
        h += "<div class=\"grid\"><div>" + rateChart(title: "SYN-ACK", r.timeline.map { ($0.synackPassed, $0.synackDropped) }, width: r.timelineWidth)
        h += "</div><div>" + rateChart(title: "RST", r.timeline.map { ($0.rstPassed, $0.rstDropped) }, width: r.timelineWidth)
        h += "</div></div>\n"

        let rstAttacks = r.attacks.filter { $0.vector == .rst }.count
        h += "<h2>Attacks (\(r.attacks.count - rstAttacks) SYN-ACK, \(rstAttacks) RST)</h2>\n"
        let start = r.firstTimestamp ?? 0
        h += table(["vector", "prefix", "offset", "lasted", "rate/s at start"], r.attacks.prefix(100).map { a in
            [a.vectorName, a.prefix, String(format: "+%.1f s", Double(a.start - start) / 1e9),
             a.end.map { String(format: "%.1f s", Double($0 - a.start) / 1e9) } ?? "open", String(format: "%.0f", a.rate)]
        })

        h += "<div class=\"grid\"><div><h2>Victims per prefix (dropped packets)</h2>\n"
        h += barChart(r.victimPrefixes.map { ("\($0.prefix) (\($0.victims))", $0.dropped) }, color: dropColor, empty: "no victims")
        h += "</div><div><h2>Session end reasons</h2>\n"
        h += barChart(r.endReasons, color: "#4a6fa5", empty: "no TCP sessions")
        h += "</div></div>\n"

        h += "<div class=\"grid\"><div><h2>Verdicts by reason</h2>\n"
        h += table(["reason", "frames"], r.reasons.map { [$0.0, String($0.1)] })
        h += "</div><div><h2>Zeek conn_state</h2>\n"
        h += table(["state", "sessions"], r.connStates.map { [$0.0, String($0.1)] })
        h += "</div></div>\n"

        h += "<div class=\"grid\"><div><h2>Top victims (of \(r.victimCount))</h2>\n"
        h += table(["address", "SYN-ACKs dropped", "RSTs dropped", "reflectors"],
                   r.victims.prefix(20).map { [$0.address, String($0.synackDropped), String($0.rstDropped), String($0.reflectors)] })
        h += "</div><div><h2>Top reflectors (of \(r.reflectorCount))</h2>\n"
        h += table(["address", "SYN-ACKs dropped"], r.reflectors.prefix(20).map { [$0.address, String($0.synackDropped)] })
        h += "</div></div>\n"

        if let l = r.labels {
            h += "<h2>Labelled evaluation</h2>\n"
            h += "<p>precision \(String(format: "%.4f", l.precision)) · recall \(String(format: "%.4f", l.recall)) (drop vs attack-*)</p>\n"
            h += table(["label", "accept", "drop"], l.perLabel.map { [$0.0, String($0.accept), String($0.drop)] })
        }
        h += "<p class=\"sub\">Counts follow docs/output.md's counting rules (schema reflectguard.score/1). Time is packet time.</p>\n"
        h += "</body></html>\n"
        return h
    }

    static let passColor = "#3c9d5d"
    static let dropColor = "#d1495b"

    static func esc(_ s: String) -> String {
        var o = ""
        for c in s {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            default: o.append(c)
            }
        }
        return o
    }

    static func timeRange(_ r: ScoreReport) -> String {
        guard let a = r.firstTimestamp, let b = r.lastTimestamp else { return "no frames" }
        return "\(TextReport.utc(a)) UTC, \(TextReport.duration(b - a))"
    }

    static func legend(_ items: [(String, String)]) -> String {
        "<div class=\"legend\">" + items.map { "<span class=\"sw\" style=\"background:\($0.1)\"></span>\(esc($0.0))" }.joined() + "</div>\n"
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        if rows.isEmpty { return "<p class=\"sub\">none</p>\n" }
        var t = "<table><tr>" + header.map { "<th>\(esc($0))</th>" }.joined() + "</tr>\n"
        for row in rows { t += "<tr>" + row.map { "<td>\(esc($0))</td>" }.joined() + "</tr>\n" }
        return t + "</table>\n"
    }

    /// A rate chart: passed and dropped packets per bucket as two lines over a shared axis.
    static func rateChart(title: String, _ series: [(UInt64, UInt64)], width bucket: Int64) -> String {
        let w = 520.0, h = 220.0, left = 56.0, right = 10.0, top = 22.0, bottom = 30.0
        let plotW = w - left - right, plotH = h - top - bottom
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\">"
        s += "<text x=\"\(left)\" y=\"14\" style=\"font-weight:600\">\(esc(title)) per second</text>"
        let perSecond = Double(max(1, bucket))
        let maxV = max(1.0, series.map { Double(max($0.0, $0.1)) / perSecond }.max() ?? 1)
        let scaleMax = niceCeil(maxV)
        // Axes and horizontal grid with 4 ticks.
        for i in 0...4 {
            let v = scaleMax * Double(i) / 4
            let y = top + plotH - plotH * Double(i) / 4
            s += "<line x1=\"\(left)\" y1=\(q(y)) x2=\"\(left + plotW)\" y2=\(q(y)) stroke=\"#e4e6ee\"/>"
            s += "<text x=\"\(left - 6)\" y=\(q(y + 4)) text-anchor=\"end\">\(short(v))</text>"
        }
        let n = max(1, series.count)
        let span = Double(n) * perSecond
        for i in 0...4 {
            let x = left + plotW * Double(i) / 4
            s += "<text x=\(q(x)) y=\"\(h - 10)\" text-anchor=\"middle\">\(short(span * Double(i) / 4))s</text>"
        }
        s += "<line x1=\"\(left)\" y1=\(q(top + plotH)) x2=\"\(left + plotW)\" y2=\(q(top + plotH)) stroke=\"#889\"/>"
        if series.isEmpty {
            s += "<text x=\(q(left + plotW / 2)) y=\(q(top + plotH / 2)) text-anchor=\"middle\">no packets</text>"
        } else {
            // Dropped as a shaded area underneath, passed as a line on top, so a trickle of
            // legitimate SYN-ACKs stays visible beside a flood of dropped ones.
            for (k, color) in [(1, dropColor), (0, passColor)] {
                var pts = ""
                for (i, v) in series.enumerated() {
                    let value = Double(k == 0 ? v.0 : v.1) / perSecond
                    // Step shape: each bucket is a flat segment over its own width.
                    let x0 = left + plotW * Double(i) / Double(n)
                    let x1 = left + plotW * Double(i + 1) / Double(n)
                    let y = top + plotH - plotH * value / scaleMax
                    pts += "\(f(x0)),\(f(y)) \(f(x1)),\(f(y)) "
                }
                if k == 1 {
                    let base = f(top + plotH)
                    s += "<polygon fill=\"\(color)\" fill-opacity=\"0.25\" stroke=\"\(color)\" stroke-width=\"1.2\" "
                        + "points=\"\(f(left)),\(base) \(pts)\(f(left + plotW)),\(base)\"/>"
                } else {
                    s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(pts)\"/>"
                }
            }
        }
        return s + "</svg>\n"
    }

    /// A horizontal bar chart of labelled counts.
    static func barChart(_ rows: [(String, UInt64)], color: String, empty: String) -> String {
        let w = 520.0, rowH = 22.0, labelW = 200.0, right = 60.0
        let shown = Array(rows.prefix(15))
        let h = max(40.0, rowH * Double(shown.count) + 10)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\">"
        if shown.isEmpty {
            s += "<text x=\"10\" y=\"24\">\(esc(empty))</text>"
            return s + "</svg>\n"
        }
        let maxV = Double(shown.map { $0.1 }.max() ?? 1)
        for (i, row) in shown.enumerated() {
            let y = 5 + rowH * Double(i)
            let bw = maxV == 0 ? 0 : (w - labelW - right) * Double(row.1) / maxV
            s += "<text x=\"\(labelW - 8)\" y=\(q(y + 15)) text-anchor=\"end\">\(esc(row.0))</text>"
            s += "<rect x=\"\(labelW)\" y=\(q(y + 3)) width=\(q(max(bw, 1))) height=\"\(rowH - 6)\" fill=\"\(color)\" rx=\"2\"/>"
            s += "<text x=\(q(labelW + max(bw, 1) + 6)) y=\(q(y + 15))>\(row.1)</text>"
        }
        return s + "</svg>\n"
    }

    static func q(_ x: Double) -> String { "\"\(f(x))\"" }
    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    static func short(_ v: Double) -> String {
        if v >= 1_000_000 { return String(format: "%.1fM", v / 1_000_000) }
        if v >= 10_000 { return String(format: "%.0fk", v / 1000) }
        if v >= 1000 { return String(format: "%.1fk", v / 1000) }
        if v == v.rounded() { return String(Int(v)) }
        return String(format: "%g", (v * 100).rounded() / 100)
    }

    /// The next round number at or above `v` (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k), so axis ticks read well.
    static func niceCeil(_ v: Double) -> Double {
        var base = 1.0
        while base * 10 <= v { base *= 10 }
        for m in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] where base * m >= v { return base * m }
        return base * 10
    }
}
