import Foundation
import Synchronization
import Scoring

/// Structured log lines: one JSON object per event on stderr (journald and `jq` read them as they
/// are). Shaped like swift-log: a value type with a level, and fields built only when the level is
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
        line += "}\n"
        // One write per line: concurrent workers never interleave inside a line. A reader that
        // went away (EPIPE, with SIGPIPE ignored) or a closed stderr (EBADF) loses the line, never
        // the process: the shutdown that removes the rules still has to run.
        let written = line.withCString { p in fputs(p, stderr) }
        if written == EOF {
            Logger.droppedLines.add(1, ordering: .relaxed)
            clearerr(stderr)
        }
    }

    /// Lines that could not be written to stderr.
    public static let droppedLines = Atomic<UInt64>(0)

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
