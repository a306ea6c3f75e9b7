#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// The one reader of the kernel's small text files (/proc, /proc/sys, /sys) and /proc
/// directories, for the figures the agent looks up: capabilities, memory, process metrics, link
/// counters. Their sizes show as 0, so each is read to its end, bounded.
enum ProcFiles {
    /// The whole file, at most 64 KiB; nil when it cannot be opened.
    static func read(_ path: String) -> String? {
        guard let data = try? readFile(path, limit: 65536) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// What follows `prefix` on the first line of `path` that starts with it ("" for the first
    /// line), without the line's end.
    static func line(in path: String, after prefix: String) -> Substring? {
        guard let text = read(path) else { return nil }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where line.hasPrefix(prefix) {
            return line.dropFirst(prefix.count)
        }
        return nil
    }

    /// The digits of that line as a number; nil when there is no such line or it holds no
    /// number (`max`, cgroup's "no limit").
    static func number(in path: String, after prefix: String = "") -> UInt64? {
        line(in: path, after: prefix).flatMap { UInt64(String($0.filter(\.isNumber))) }
    }

    /// Entries of a directory (`.` and `..` not counted); nil when it cannot be opened.
    static func entryCount(_ path: String) -> Int? {
        guard let d = opendir(path) else { return nil }
        defer { closedir(d) }
        var n = 0
        while let e = readdir(d) {
            let first = withUnsafeBytes(of: e.pointee.d_name) { $0[0] }
            if first != UInt8(ascii: ".") { n += 1 }
        }
        return n
    }
}
