import VerdictEngine

/// One attack the engine reported while scoring: a SYN-ACK flood (unsolicited SYN-ACKs) or an
/// RST attack (untracked RSTs above the prefix's learnt baseline), on one prefix.
public struct AttackRow: Sendable, Equatable {
    public var vector: AttackEvent.Vector
    public var prefix: String
    public var start: Nanoseconds
    /// Nil: still on when the capture ended.
    public var end: Nanoseconds?
    /// Per second at the start: dropped SYN-ACKs, or untracked RSTs.
    public var rate: Double

    public var vectorName: String { vector == .synack ? "SYN-ACK" : "RST" }

    /// Pairs each `started` with the next `ended` of the same prefix and vector, in start order.
    public static func pair(_ events: [AttackEvent]) -> [AttackRow] {
        var rows: [AttackRow] = []
        var open: [String: Int] = [:]
        for e in events {
            let id = e.vector.rawValue + " " + e.prefix.description
            switch e.kind {
            case .started:
                guard open[id] == nil else { continue }
                open[id] = rows.count
                rows.append(AttackRow(vector: e.vector, prefix: e.prefix.description, start: e.startedAt, end: nil,
                                      rate: e.vector == .synack ? e.synackDropRate : e.rstDropRate))
            case .ended:
                guard let i = open.removeValue(forKey: id) else { continue }
                rows[i].end = e.at
            }
        }
        return rows
    }
}
