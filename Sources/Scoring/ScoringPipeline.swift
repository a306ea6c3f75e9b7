import PacketParser
import VerdictEngine

/// The one scoring pipeline every source feeds: `score CAPTURE`, `score --interface IF` and the
/// inline agent's `run --dry-run`. It sees each frame once, with the decision the engine gave it,
/// and keeps everything a report needs in bounded memory: counts, verdicts by reason, sessions with
/// their end reasons, victims and reflectors, a per-second timeline and, with labels, a confusion
/// matrix. It never reads a clock: time is the packet's.
public final class ScoringPipeline {
    public let policy: Policy
    // @exclusivity(unchecked) on the per-frame state: one thread feeds a pipeline and nothing
    // hands out inout access to it, so the runtime checks prove nothing (~10% of a run, perf).
    @exclusivity(unchecked) public private(set) var counts = PacketCounts()
    @exclusivity(unchecked) public private(set) var accepted: UInt64 = 0
    @exclusivity(unchecked) public private(set) var dropped: UInt64 = 0
    /// Decisions per reason, only reasons that occurred.
    public var reasons: [Reason: UInt64] {
        var d: [Reason: UInt64] = [:]
        for r in Reason.allCases where reasonCounts[r.ordinal] > 0 { d[r] = reasonCounts[r.ordinal] }
        return d
    }
    /// Counted by `Reason.ordinal` in memory allocated once: a dictionary keyed by `Reason`
    /// hashes the reason's String raw value on every frame (~4% of a scoring run, perf).
    private let reasonCounts: UnsafeMutablePointer<UInt64>
    public let sessions: SessionTable
    @exclusivity(unchecked) public private(set) var firstTimestamp: Nanoseconds?
    @exclusivity(unchecked) public private(set) var lastTimestamp: Nanoseconds?
    /// Frames seen so far; the next frame's number (from 1, as Wireshark counts) is `frames + 1`.
    public var frames: Int { counts.frames }

    /// Called for every frame with its number and decision (for `--verdicts FILE.csv`).
    /// Set before the first frame; read on every one (see above on exclusivity).
    @exclusivity(unchecked) public var verdictSink: ((Int, Decision) -> Void)?

    let victims: VictimTable
    let reflectors: ReflectorTable
    let timeline = Timeline()
    public let labels: LabelTable?
    @exclusivity(unchecked) private(set) var confusion: [[UInt64]]

    /// `hashSeed` keys the session, victim and reflector indexes, whose keys are addresses and
    /// ports the senders pick: random (a new one per pipeline) unless a test fixes it. The report,
    /// the verdicts and the session rows are the same whatever it is.
    public init(policy: Policy, labels: LabelTable? = nil, sessionCapacity: Int = 1 << 18,
                sessionTimeouts: SessionTimeouts = SessionTimeouts(), reflectorCapacity: Int = 1 << 16,
                victimCapacity: Int = 1 << 16, hashSeed: UInt64 = KeyedHash.randomSeed()) {
        self.policy = policy
        self.labels = labels
        let keyed = KeyedHash(hashSeed)
        self.sessions = SessionTable(capacity: sessionCapacity, timeouts: sessionTimeouts, hashSeed: hashSeed)
        self.reflectors = ReflectorTable(capacity: reflectorCapacity, hash: keyed)
        self.victims = VictimTable(capacity: victimCapacity, hash: keyed)
        self.confusion = Array(repeating: [0, 0], count: labels?.names.count ?? 0)
        reasonCounts = .allocate(capacity: Reason.ordinalCount)
        reasonCounts.initialize(repeating: 0, count: Reason.ordinalCount)
    }

    deinit { reasonCounts.deallocate() }

    /// Feeds one frame: its decoded headers, its capture (or arrival) time and the decision the
    /// engine gave it (or would give, in dry-run).
    public func observe(_ packet: ParsedPacket, at time: Nanoseconds, decision: Decision) {
        counts.add(packet)
        let frame = counts.frames
        if firstTimestamp == nil { firstTimestamp = time }
        if lastTimestamp.map({ time > $0 }) ?? true { lastTimestamp = time }

        let drop = decision.verdict == .drop
        if drop { dropped &+= 1 } else { accepted &+= 1 }
        reasonCounts[decision.reason.ordinal] &+= 1
        verdictSink?(frame, decision)

        if let labels {
            let l = labels.label(ofFrame: frame)
            confusion[Int(l)][drop ? 1 : 0] &+= 1
        }

        guard packet.hasTCP else { return }
        sessions.observe(packet, at: time)
        let f = packet.flags
        timeline.add(at: time - (firstTimestamp ?? time), flags: f, dropped: drop)
        if drop && (f.isSYNACK || f.isRST) && policy.protected.contains(packet.destination) {
            victims.add(victim: packet.destination, reflector: packet.source, synack: f.isSYNACK)
            if f.isSYNACK { reflectors.add(packet.source) }
        }
    }

    /// A hint that `packet` comes `distance` (1 or 2) frames later: starts loading the table
    /// lines `observe` will read for it (see `SessionTable.prefetch`). Changes nothing.
    public func prefetch(_ packet: ParsedPacket, distance: Int) {
        guard packet.hasTCP else { return }
        sessions.prefetch(packet, distance: distance)
        let f = packet.flags
        if distance == 1 && (f.isSYNACK || f.isRST) {
            victims.prefetch(victim: packet.destination)
            if f.isSYNACK { reflectors.prefetch(packet.source) }
        }
    }

    /// Closes the remaining sessions (as `open`, or aged out by the last packet's time). Call
    /// once, when the source has no more frames.
    public func finish() {
        sessions.finish(at: lastTimestamp ?? 0)
    }

    /// One line for the live status on a terminal.
    public var statusLine: String {
        let synackDropped = timeline.totals.synackDropped
        let rstDropped = timeline.totals.rstDropped
        return "frames \(counts.frames)  tcp \(counts.tcp)  accept \(accepted)  drop \(dropped)"
            + " (synack \(synackDropped), rst \(rstDropped))  sessions \(sessions.active) open / \(sessions.total)"
            + "  victims \(victims.count)"
    }

    /// Everything a report shows, after `finish()`.
    public func report(source: String, linkType: String) -> ScoreReport {
        var r = ScoreReport()
        r.source = source
        r.linkType = linkType
        r.firstTimestamp = firstTimestamp
        r.lastTimestamp = lastTimestamp
        r.packets = counts
        r.accepted = accepted
        r.dropped = dropped
        r.reasons = reasons.map { ($0.key.token, $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        r.sessionsTotal = sessions.total
        r.sessionsEvicted = sessions.evicted
        r.endReasons = EndReason.allCases.compactMap { e in sessions.endReasons[e].map { (e.rawValue, $0) } }
        r.connStates = ConnState.allCases.compactMap { c in sessions.connStates[c].map { (c.rawValue, $0) } }
        r.victims = victims.top(100)
        r.victimCount = victims.count
        r.victimsOverflow = victims.overflow
        r.victimPrefixes = victims.byPrefix(limit: 20)
        r.reflectors = reflectors.top(20)
        r.reflectorCount = reflectors.count
        r.reflectorsOverflow = reflectors.overflow
        r.timeline = timeline.buckets
        r.timelineWidth = timeline.width
        if let labels {
            var per: [(String, accept: UInt64, drop: UInt64)] = []
            var tp: UInt64 = 0, fp: UInt64 = 0, fn: UInt64 = 0
            for (i, name) in labels.names.enumerated() {
                let a = confusion[i][0], d = confusion[i][1]
                if a == 0 && d == 0 && i == 0 { continue }   // "unlabelled" only when it occurs
                per.append((name, a, d))
                // Unlabelled frames say nothing about right or wrong: they stay out of the ratios.
                if i == 0 { continue }
                if LabelTable.isAttack(name) { tp += d; fn += a } else { fp += d }
            }
            r.labels = LabelSummary(perLabel: per,
                                    precision: tp + fp == 0 ? 1 : Double(tp) / Double(tp + fp),
                                    recall: tp + fn == 0 ? 1 : Double(tp) / Double(tp + fn),
                                    truePositives: tp, falsePositives: fp, falseNegatives: fn)
        }
        return r
    }
}

/// The per-frame labels of a labelled scenario (`--labels FILE.csv`, header `frame,label`).
public struct LabelTable: Sendable {
    /// Label names; index 0 is `unlabelled` for frames the file does not name.
    public internal(set) var names: [String] = ["unlabelled"]
    private var byFrame: [UInt16] = []

    public init() {}

    public static func isAttack(_ label: String) -> Bool { label.hasPrefix("attack-") }

    /// Labels are stored densely by frame (2 bytes each, looked up per frame), so one huge frame
    /// number would allocate gigabytes: 100 million frames (200 MB) is beyond any capture `score`
    /// reads in one go (a 100M-frame pcap is > 6 GB of minimum-size frames).
    public static let maxFrame = 100_000_000

    /// Parses the CSV text. Throws a message naming the line on anything malformed.
    public init(csv text: String) throws {
        var reader = Reader()
        var text = text
        try text.withUTF8 { try reader.read(UnsafeRawBufferPointer($0)) }
        self = try reader.finish()
    }

    mutating func set(frame: Int, label: UInt16) {
        if byFrame.count < frame { byFrame.append(contentsOf: repeatElement(0, count: frame - byFrame.count)) }
        byFrame[frame - 1] = label
    }

    /// The label index of a frame (numbered from 1); 0 when unlabelled.
    @inlinable
    public func label(ofFrame frame: Int) -> UInt16 {
        frame >= 1 && frame <= byFrameCount ? labelAt(frame - 1) : 0
    }

    @usableFromInline var byFrameCount: Int { byFrame.count }
    @usableFromInline func labelAt(_ i: Int) -> UInt16 { byFrame[i] }
}

func isAttackLabel(_ s: String) -> Bool { s.hasPrefix("attack-") && s.count > 7 }

public struct LabelError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
