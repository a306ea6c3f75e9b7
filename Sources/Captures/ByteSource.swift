#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// A stream of bytes a capture is read from: a file descriptor, or a decompressor over one. The
/// readers pull large pieces (megabytes) from it, so a call per piece costs nothing measurable.
public protocol ByteSource: AnyObject {
    /// Reads up to `count` bytes into `buffer`; 0 only at the end of the stream. Throws a
    /// `CaptureError` naming the file on a read error or corrupt compressed data.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int
}

extension ByteSource {
    /// Reads until `count` bytes or the end; returns how many were read.
    func readFully(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = try read(into: buffer + done, count: count - done)
            if n == 0 { break }
            done += n
        }
        return done
    }
}

/// A file descriptor, read with `read(2)`; closed when the source goes.
final class FileSource: ByteSource {
    let fd: Int32
    let path: String
    private let owned: Bool

    init(fd: Int32, path: String, owned: Bool = true) {
        self.fd = fd
        self.path = path
        self.owned = owned
    }

    /// Opens `path` for reading (`-` is standard input, not closed at the end).
    static func open(_ path: String) throws -> FileSource {
        if path == "-" { return FileSource(fd: STDIN_FILENO, path: path, owned: false) }
        // Blocking, as libpcap opens: a FIFO's open waits for its writer (a non-blocking open
        // would read an end of file if the writer is a moment late).
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CaptureError("cannot read capture \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            Glibc.close(fd)
            throw CaptureError("cannot read capture \(path): it is a directory")
        }
        if (st.st_mode & S_IFMT) == S_IFREG { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL) }
        return FileSource(fd: fd, path: path)
    }

    deinit { if owned { Glibc.close(fd) } }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        do throws(SystemCallError) {
            return try syscallValue("read(\(path))") { Glibc.read(fd, buffer, count) }
        } catch {
            throw CaptureError("error reading \(path): \(error.reason)")
        }
    }
}

/// Bytes already read from a stream (to look at its magic number) handed out again before the
/// rest of it: a pipe or a decompressor cannot seek back.
final class PrefixedSource: ByteSource {
    private var prefix: [UInt8]
    private var offset = 0
    let upstream: ByteSource

    init(_ prefix: [UInt8], _ upstream: ByteSource) {
        self.prefix = prefix
        self.upstream = upstream
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if offset < prefix.count {
            let n = min(count, prefix.count - offset)
            prefix.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            offset += n
            if offset == prefix.count { prefix = [] ; offset = 0 }
            return n
        }
        return try upstream.read(into: buffer, count: count)
    }

    /// Reads the first `count` bytes of `source` (fewer at its end) and returns them with a source
    /// that hands them out again.
    static func peek(_ source: ByteSource, _ count: Int) throws -> ([UInt8], PrefixedSource) {
        var head = [UInt8](repeating: 0, count: count)
        let n = try head.withUnsafeMutableBytes { try source.readFully(into: $0.baseAddress!, count: count) }
        head.removeLast(count - n)
        return (head, PrefixedSource(head, source))
    }
}
