#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PacketParser
import Synchronization
import VerdictEngine

public struct OutputError: Error, CustomStringConvertible {
    public let description: String
}

/// A file written through a 1 MiB buffer: `--verdicts` writes a row for every frame, so a
/// million-frame capture must not cost a million `write` calls.
///
/// An output never follows a symbolic link at its last component (one planted where root writes
/// a report would make `score` overwrite what it points to), and a regular file is written to a
/// new file beside it, created 0644 (less the umask) and renamed over the path by `close()`: until
/// then the path keeps what it had, so a run that fails leaves no truncated output behind, and an
/// existing file's other names (hard links) keep their contents. An existing device or FIFO
/// (`/dev/null`) is written in place.
public final class BufferedFile {
    private let fd: Int32
    private var buffer: [UInt8] = []
    public let path: String
    /// The file written until `close()` renames it to `path`; nil when writing `path` in place.
    private var temporary: String?
    /// The first write error, reported at `close()` (rows are written on the packet path).
    private var failure: String?
    private var closed = false

    /// Whether this output is standard output (`-`): written in place, never closed.
    public var isStandardOutput: Bool { path == "-" }

    public init(path: String) throws {
        func failed() -> OutputError { OutputError(description: "cannot write \(path): \(String(cString: strerror(errno)))") }
        if path == "-" {
            fd = STDOUT_FILENO
            self.path = path
            buffer.reserveCapacity(1 << 20)
            return
        }
        var st = stat()
        let exists = lstat(path, &st) == 0
        let type = st.st_mode & S_IFMT
        if exists && type == S_IFLNK {
            throw OutputError(description: "cannot write \(path): it is a symbolic link, and outputs never follow one "
                + "(name the file it points to)")
        }
        if exists && type != S_IFREG {
            // O_NOFOLLOW: the path may have become a link since lstat; a device is never truncated.
            fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw failed() }
        } else {
            let slash = path.lastIndex(of: "/")
            let directory = slash.map { String(path[...$0]) } ?? ""
            let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            var fd: Int32 = -1
            var candidate = ""
            // O_EXCL with a fresh random name: never an existing file, never through a link.
            for _ in 0..<16 {
                candidate = directory + "." + name + ".reflectguard-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
                fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                if fd >= 0 || errno != EEXIST { break }
            }
            guard fd >= 0 else { throw failed() }
            if exists {
                // The file it replaces keeps its owner, and its mode where that is stricter.
                _ = fchown(fd, st.st_uid, st.st_gid)
                _ = fchmod(fd, st.st_mode & 0o644)
            }
            self.fd = fd
            temporary = candidate
        }
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    /// A file not closed (an error ended the run first) leaves the path as it was.
    deinit {
        if !closed && fd != STDOUT_FILENO {
            Glibc.close(fd)
            if let temporary { unlink(temporary) }
        }
    }

    public func write(_ s: String) {
        var s = s
        s.withUTF8 { buffer.append(contentsOf: $0) }
        if buffer.count >= 1 << 20 { flush() }
    }

    /// Appends a decimal number without building a String.
    public func write(number: Int) {
        if number < 0 { buffer.append(UInt8(ascii: "-")) }
        var v = number.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { d[n] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; n += 1 } while v > 0
            while n > 0 { n -= 1; buffer.append(d[n]) }
        }
    }

    /// Seconds since the epoch from nanoseconds, as `JSONReport.seconds` prints them (fraction
    /// trimmed of trailing zeros down to microseconds), without building a String: the sessions
    /// CSV writes two per session and String formatting was half of a `--sessions` run (perf).
    public func write(seconds ns: Int64) {
        let s = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
        var frac = Int(ns - s * 1_000_000_000)
        write(number: Int(s))
        buffer.append(UInt8(ascii: "."))
        var digits = 9
        while digits > 6 && frac % 10 == 0 { frac /= 10; digits -= 1 }
        var div = 1
        for _ in 1..<digits { div *= 10 }
        while div > 0 {
            buffer.append(UInt8(ascii: "0") + UInt8(frac / div % 10))
            div /= 10
        }
    }

    public func write(bytes: StaticString) {
        bytes.withUTF8Buffer { buffer.append(contentsOf: $0) }
    }

    private func flush() {
        guard !buffer.isEmpty else { return }
        var failedWith: Int32 = 0
        buffer.withUnsafeBytes { all in
            var done = 0
            while done < all.count {
                let n = Glibc.write(fd, all.baseAddress! + done, all.count - done)
                if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else {
                    failedWith = n < 0 ? errno : ENOSPC
                    break
                }
            }
        }
        if failedWith != 0 && failure == nil {
            failure = "cannot write \(path): \(String(cString: strerror(failedWith)))"
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes what is buffered and, for a regular file, puts it in place; throws the first error,
    /// and then the path keeps what it had.
    public func close() throws {
        flush()
        closed = true
        if fd == STDOUT_FILENO {
            if let failure { throw OutputError(description: failure) }
            return
        }
        if Glibc.close(fd) != 0 && failure == nil {
            failure = "cannot write \(path): \(String(cString: strerror(errno)))"
        }
        if let temporary {
            if failure == nil && rename(temporary, path) != 0 {
                failure = "cannot write \(path): \(String(cString: strerror(errno)))"
            }
            if failure != nil { unlink(temporary) }
        }
        if let failure { throw OutputError(description: failure) }
    }
}

/// `--verdicts FILE.csv`: `frame,verdict,reason`, one row for every frame (docs/output.md); with
/// several input files, a trailing `file` column says which file the frame came from.
public final class VerdictsCSV {
    private let out: BufferedFile
    private let files: FileColumn?
    /// The file of the last row written (see `FileColumn.field`).
    private var currentFile = 0

    public init(path: String, files: FileColumn? = nil) throws {
        out = try BufferedFile(path: path)
        self.files = files
        out.write(bytes: files == nil ? "frame,verdict,reason\n" : "frame,verdict,reason,file\n")
    }

    public func row(frame: Int, decision: Decision) {
        out.write(number: frame)
        out.write(bytes: decision.verdict == .drop ? ",drop," : ",accept,")
        out.write(decision.reason.token)
        if let files {
            out.write(bytes: ",")
            out.write(files.field(ofFrame: frame, current: &currentFile))
        }
        out.write(bytes: "\n")
    }

    public func close() throws { try out.close() }
}

/// `--sessions FILE.csv`: one row per session as it closes.
public final class SessionsCSV {
    public static let header =
        "client,client_port,server,server_port,start,end,packets_to_server,packets_to_client,end_reason,conn_state,history"
    private let out: BufferedFile

    public init(path: String) throws {
        out = try BufferedFile(path: path)
        out.write(Self.header + "\n")
    }

    public func row(_ s: SessionRecord) {
        out.write(s.client.description)
        out.write(bytes: ",")
        out.write(number: Int(s.clientPort))
        out.write(bytes: ",")
        out.write(s.server.description)
        out.write(bytes: ",")
        out.write(number: Int(s.serverPort))
        out.write(bytes: ",")
        out.write(seconds: s.start)
        out.write(bytes: ",")
        out.write(seconds: s.end)
        out.write(bytes: ",")
        out.write(number: Int(truncatingIfNeeded: s.packetsToServer))
        out.write(bytes: ",")
        out.write(number: Int(truncatingIfNeeded: s.packetsToClient))
        out.write(bytes: ",")
        out.write(s.endReason.rawValue)
        out.write(bytes: ",")
        out.write(s.connState.rawValue)
        out.write(bytes: ",")
        out.write(s.history)
        out.write(bytes: "\n")
    }

    public func close() throws { try out.close() }
}

/// Which file a path names, to tell whether an output would overwrite an input or another output,
/// whatever the spelling (`./x`, a symbolic link, a hard link): an existing file by its device
/// and inode (links followed, as an input is read), a path not created yet by its directory's
/// and its last component.
public struct FileIdentity: Hashable {
    private let device: UInt64
    private let inode: UInt64
    private let name: String?
    /// A regular file or one not created yet: what two outputs must not share (two outputs to
    /// `/dev/null` lose nothing).
    public let isFile: Bool

    /// nil when neither the path nor its directory exists (opening it reports that).
    public init?(path: String) {
        var st = stat()
        if stat(path, &st) == 0 {
            name = nil
            isFile = (st.st_mode & S_IFMT) == S_IFREG
        } else {
            let slash = path.lastIndex(of: "/")
            let directory = slash.map { String(path[...$0]) } ?? "."
            guard stat(directory, &st) == 0 else { return nil }
            name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            isFile = true
        }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// Which input file a frame came from, for the verdicts CSV's `file` column of a file set. The
/// thread reading the files calls `begin` for each file in order, before handing out its first
/// frame (or passing over it); the thread writing the rows (with `--threads 2`, another one) asks
/// for frames in increasing order, so it follows the starts with one atomic load a row. Shared
/// between the two threads, so nothing in it changes but the atomics: where the writer has got
/// to is the writer's own (`VerdictsCSV`).
public final class FileColumn: Sendable {
    private final class Start: Sendable { let frame = Atomic<Int>(.max) }
    /// The names as CSV fields (quoted when they hold a comma, a quote or a line break).
    private let fields: [String]
    private let starts: [Start]

    public init(files: [String]) {
        fields = files.map(csvField)
        starts = files.map { _ in Start() }
    }

    /// File `index`'s frames start at frame `frame` (counted from 1, over the whole set).
    public func begin(file index: Int, atFrame frame: Int) {
        starts[index].frame.store(frame, ordering: .releasing)
    }

    /// The field of the file `frame` came from; `current` is the file of the frame asked before
    /// (0 at first), moved on to this frame's.
    func field(ofFrame frame: Int, current: inout Int) -> String {
        while current + 1 < starts.count && frame >= starts[current + 1].frame.load(ordering: .acquiring) { current += 1 }
        return fields[current]
    }
}

/// A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a line break.
func csvField(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
