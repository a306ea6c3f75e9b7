/// Writes classic pcap files (nanosecond timestamps, magic 0xa1b23c4d) in pure Swift, for the
/// scenario generator and tests. Buffered; `close()` flushes.
#if canImport(Glibc)
import Glibc
#endif
import PacketParser

public struct PcapWriteError: Error, CustomStringConvertible {
    public let description: String
}

/// Opens `path` for writing as `score`'s outputs do: never through a symbolic link at its last
/// component (one planted where root writes would redirect the write), created 0644 less the
/// umask, whatever the process's default mode. `-` is standard output (a copy of the descriptor,
/// so closing the stream leaves it open).
func openOutput(_ path: String) throws -> UnsafeMutablePointer<FILE> {
    let fd = path == "-" ? dup(STDOUT_FILENO) : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
        let reason = errno == ELOOP ? "it is a symbolic link, and outputs never follow one" : String(cString: strerror(errno))
        throw PcapWriteError(description: "cannot write \(path): \(reason)")
    }
    guard let f = fdopen(fd, "wb") else {
        let reason = String(cString: strerror(errno))
        close(fd)
        throw PcapWriteError(description: "cannot write \(path): \(reason)")
    }
    return f
}

public final class PcapWriter {
    private let file: UnsafeMutablePointer<FILE>
    private var buffer: [UInt8] = []
    public let snapLength: UInt32
    private var closed = false

    public init(path: String, link: LinkType, snapLength: UInt32 = 262_144) throws {
        file = try openOutput(path)
        self.snapLength = snapLength
        buffer.reserveCapacity(1 << 20)
        append32(0xa1b2_3c4d)          // nanosecond-resolution pcap
        append16(2); append16(4)      // version 2.4
        append32(0); append32(0)      // thiszone, sigfigs
        append32(snapLength)
        append32(link.linktype)
    }

    /// Appends a frame. `wireLength` defaults to the frame's length; frames longer than the snap
    /// length are cut to it, as a capture would be.
    public func write(_ frame: [UInt8], timestamp: Int64, wireLength: Int? = nil) throws {
        let cap = min(frame.count, Int(snapLength))
        append32(UInt32(truncatingIfNeeded: timestamp / 1_000_000_000))
        append32(UInt32(truncatingIfNeeded: timestamp % 1_000_000_000))
        append32(UInt32(cap))
        append32(UInt32(wireLength ?? frame.count))
        buffer.append(contentsOf: frame[0..<cap])
        if buffer.count > (1 << 20) { try flush() }
    }

    /// Appends a frame from a borrowed buffer (the generator's hot path: no array per frame).
    public func write(_ frame: UnsafeRawBufferPointer, timestamp: Int64, wireLength: Int? = nil) throws {
        let cap = min(frame.count, Int(snapLength))
        append32(UInt32(truncatingIfNeeded: timestamp / 1_000_000_000))
        append32(UInt32(truncatingIfNeeded: timestamp % 1_000_000_000))
        append32(UInt32(cap))
        append32(UInt32(wireLength ?? frame.count))
        buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: frame[0..<cap]))
        if buffer.count > (1 << 20) { try flush() }
    }

    /// Flushes and closes; later calls do nothing.
    public func close() throws {
        guard !closed else { return }
        closed = true
        defer { fclose(file) }
        try flush()
    }

    private func flush() throws {
        let n = buffer.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard n == buffer.count else {
            throw PcapWriteError(description: "short write: \(String(cString: strerror(errno)))")
        }
        buffer.removeAll(keepingCapacity: true)
    }

    private func append16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
    private func append32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
}
