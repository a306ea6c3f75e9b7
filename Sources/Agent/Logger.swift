import Foundation
import Scoring
import Synchronization
import CSystemd

/// Structured log lines: one JSON object per event on stderr (`jq` reads them as they are), or,
/// under journald (JOURNAL_STREAM names our stderr), native journal entries with the level as
/// PRIORITY and every field as a REFLECTGUARD_* journal field, the same JSON line as MESSAGE
/// (`journalctl -u reflectguard -o cat | jq` reads what stderr would have had). Shaped like swift-log: a value type with a level, and fields built only when the level is
/// enabled (an autoclosure), so a disabled log costs one comparison. Never called per packet.
public struct Logger: Sendable {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var name: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    public var level: Level

    public init(level: Level = .info) { self.level = level }

    public func debug(_ event: String, _ fields: @autoclosure () -> [(String, LogValue)] = []) {
        log(.debug, event, fields)
    }
    public func info(_ event: String, _ fields: @autoclosure () -> [(String, LogValue)] = []) {
        log(.info, event, fields)
    }
    public func warning(_ event: String, _ fields: @autoclosure () -> [(String, LogValue)] = []) {
        log(.warning, event, fields)
    }
    public func error(_ event: String, _ fields: @autoclosure () -> [(String, LogValue)] = []) {
        log(.error, event, fields)
    }

    private func log(_ l: Level, _ event: String, _ fields: () -> [(String, LogValue)]) {
        guard l >= level else { return }
        var line = "{\"ts\":\(Logger.timestamp()),\"level\":\"\(l.name)\",\"event\":\(LogValue.string(event).json)"
        for (k, v) in fields() { line += ",\(LogValue.string(k).json):\(v.json)" }
        if Logger.sink == .journal, Logger.sendToJournal(l, event, line, fields()) { return }
        line += "}\n"
        // One write per line: concurrent workers never interleave inside a line. A reader that
        // went away (EPIPE, with SIGPIPE ignored) or a closed stderr (EBADF) loses the line, never
        // the process: the shutdown that removes the rules still has to run.
        if !StandardStreams.writeError(line) { Logger.droppedLines.add(1, ordering: .relaxed) }
    }

    /// Lines that could not be written to stderr.
    public static let droppedLines = Atomic<UInt64>(0)

    public enum Sink: Sendable { case stderr, journal }

    /// Decided once: journald sets JOURNAL_STREAM to the device and inode of the stream it
    /// connected to our stderr; the same numbers on fd 2 mean stderr still goes there (a shell
    /// started from a unit inherits the variable with another stderr).
    public static let sink: Sink = {
        guard let env = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return .stderr }
        let parts = env.split(separator: ":")
        var st = stat()
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]), fstat(2, &st) == 0,
              UInt64(st.st_dev) == dev, UInt64(st.st_ino) == ino else { return .stderr }
        return .journal
    }()

    /// syslog priorities, as journald files them (`journalctl -p warning`).
    static func priority(_ l: Level) -> Int {
        switch l {
        case .debug: return 7
        case .info: return 6
        case .warning: return 4
        case .error: return 3
        }
    }

    /// A journal field name for a log field: upper case, `_` for anything else than a letter or
    /// digit (journald's rule), under REFLECTGUARD_.
    static func journalField(_ key: String) -> String {
        "REFLECTGUARD_" + String(key.uppercased().unicodeScalars.map {
            ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") ? Character($0) : "_"
        })
    }

    /// One native journal entry; false when journald did not take it (the caller writes stderr).
    static func sendToJournal(_ l: Level, _ event: String, _ json: String, _ fields: [(String, LogValue)]) -> Bool {
        var entries = ["MESSAGE=" + json + "}", "PRIORITY=\(priority(l))", "SYSLOG_IDENTIFIER=reflectguard",
                       "REFLECTGUARD_EVENT=" + event]
        for (k, v) in fields { entries.append(journalField(k) + "=" + v.plain) }
        // One buffer, one iovec per field inside it: the pointers are valid for the whole call.
        var buffer: [UInt8] = []
        var ranges: [Range<Int>] = []
        for e in entries {
            let start = buffer.count
            buffer += e.utf8
            ranges.append(start..<buffer.count)
        }
        let r = buffer.withUnsafeMutableBytes { raw -> Int32 in
            let iov = ranges.map { iovec(iov_base: raw.baseAddress! + $0.lowerBound, iov_len: $0.count) }
            return sd_journal_sendv(iov, Int32(iov.count))
        }
        return r >= 0
    }

    /// A line of plain text (an `Error: …` before the agent's log begins) with its journald
    /// priority: under journald `<N>` in front (SyslogLevelPrefix, on by default); as it is
    /// otherwise.
    public static func plainLine(_ text: String, warning: Bool = false) -> String {
        guard sink == .journal else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "" : "<\(warning ? 4 : 3)>" + $0 }.joined(separator: "\n")
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ms = Int(ts.tv_nsec) / 1_000_000
        var s = String(ts.tv_sec)
        s += "."
        s += ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return s
    }
}

/// A JSON value for a log field.
public enum LogValue: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case strings([String])

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(Int64(value)) }

    /// The value for a journal field: text as it is, lists comma-separated.
    var plain: String {
        switch self {
        case .string(let s): return s
        case .strings(let a): return a.joined(separator: ",")
        default: return json
        }
    }

    var json: String {
        switch self {
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(format: "%.3f", d) : "null"
        case .bool(let b): return b ? "true" : "false"
        case .strings(let a): return "[" + a.map { LogValue.string($0).json }.joined(separator: ",") + "]"
        case .string(let s): return JSONWriter.quote(s)
        }
    }
}

extension LogValue {
    public static func from(_ i: Int) -> LogValue { .int(Int64(i)) }
    public static func from(_ u: UInt64) -> LogValue { .int(Int64(clamping: u)) }
}
