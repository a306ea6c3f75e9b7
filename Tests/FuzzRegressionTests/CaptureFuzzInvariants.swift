// The invariants one input of the file-reader fuzzer must keep, shared by the libFuzzer target
// (Fuzz/CaptureFuzz.swift, built by scripts/fuzz-captures.sh with swiftc, which compiles this
// very file) and the regression test that replays Fuzz/corpus-captures in the normal suite.
// Plain Swift over the public API of Captures and Scoring: no Testing, no Foundation.
#if canImport(Glibc)
import Glibc
#endif
import Captures
import PacketParser
import Scoring

/// How a fuzz input is read. Every byte string is a valid input.
///
/// - byte 0 bit 0 clear: the bytes after it are a capture file (pcap, pcapng, compressed,
///   anything), written to a scratch file and read by `CaptureReader` twice: as ReflectGuard reads
///   it and as libpcap alone reads it. Plain pcap (read directly, libpcap taking over at an unusual
///   record): both must hand out the same frames, the same times and fail at the same frame.
///   pcapng (our own reader) and compressed files: every frame's time is within
///   `CapturedFrame.timestampRange`, every error is one line naming the file and the frame, and
///   where libpcap reads a pcapng file to its end, so do we, with the same frames, lengths and
///   times (libpcap cuts a packet to its interface's snap length, Wireshark and we do not: its
///   bytes are a prefix of ours). Every frame parses with its interface's link type.
/// - byte 0 bit 0 set: the bytes after it are a `--labels` file (bit 1 puts the header
///   `frame,label` before them, so rows are reached at once), read whole and in pieces of 1 to 64
///   bytes (bits 2-7): both must give the same table or the same error.
public enum CaptureFuzzInvariants {
    /// Frames read per capture input: enough for any file under the fuzzer's -max_len.
    public static let maxFrames = 4096

    public static func check(_ input: UnsafeRawBufferPointer, scratch: String) -> [String] {
        guard let mode = input.first else { return [] }
        let body = UnsafeRawBufferPointer(rebasing: input.dropFirst())
        if mode & 1 == 0 { return checkCapture(body, scratch: scratch) }
        var text: [UInt8] = mode & 2 != 0 ? Array("frame,label\n".utf8) : []
        text += body
        return text.withUnsafeBytes { checkLabels($0, piece: Int(mode >> 2) + 1) }
    }

    static func checkCapture(_ bytes: UnsafeRawBufferPointer, scratch: String) -> [String] {
        let fd = open(scratch, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return ["cannot write scratch file \(scratch)"] }
        let written = bytes.isEmpty ? 0 : write(fd, bytes.baseAddress, bytes.count)
        close(fd)
        guard written == bytes.count else { return ["short write to \(scratch)"] }

        let direct = Result { try CaptureReader(path: scratch, direct: true) }
        let libpcap = Result { try CaptureReader(path: scratch, direct: false) }
        let head = Array(bytes.prefix(6))
        if Compression(magic: head) != nil || head.starts(with: [0x0A, 0x0D, 0x0D, 0x0A]) {
            return checkOwnReader(direct, libpcap, scratch: scratch)
        }
        switch (direct, libpcap) {
        case (.failure(let a), .failure(let b)):
            return "\(a)" == "\(b)" ? [] : ["open errors differ: \(a) / \(b)"]
        case (.success, .failure(let e)), (.failure(let e), .success):
            return ["one reader opened the file, the other failed: \(e)"]
        case (.success(let d), .success(let l)):
            return compare(d, l)
        }
    }

    static func compare(_ d: CaptureReader, _ l: CaptureReader) -> [String] {
        var failures: [String] = []
        guard d.linkType == l.linkType, d.dlt == l.dlt else { return ["link types differ: \(d.dlt) / \(l.dlt)"] }
        var packet = ParsedPacket()
        for n in 1...maxFrames {
            // A frame is valid until the next `next()`: copied before the other reader moves on.
            let a = Result { try d.next().map { (Array($0.bytes), $0.timestamp, $0.wireLength) } }
            let b = Result { try l.next().map { (Array($0.bytes), $0.timestamp, $0.wireLength) } }
            switch (a, b) {
            case (.success(nil), .success(nil)):
                return failures
            case (.failure(let x), .failure(let y)):
                if "\(x)" != "\(y)" { failures.append("frame \(n): errors differ: \(x) / \(y)") }
                return failures
            case (.success(let x?), .success(let y?)):
                if x.0 != y.0 || x.1 != y.1 || x.2 != y.2 {
                    failures.append("frame \(n): direct \(x.0.count) bytes at \(x.1), wire \(x.2); "
                        + "libpcap \(y.0.count) bytes at \(y.1), wire \(y.2)")
                    return failures
                }
                if !CapturedFrame.timestampRange.contains(x.1) { failures.append("frame \(n): time \(x.1) out of range") }
                x.0.withUnsafeBytes { PacketParser.parse($0, link: d.linkType, into: &packet) }
            default:
                failures.append("frame \(n): the readers disagree: direct \(a.map { $0?.0.count ?? -1 }), "
                    + "libpcap \(b.map { $0?.0.count ?? -1 })")
                return failures
            }
        }
        return failures
    }

    /// A frame as the checks keep it: the reader's buffer is reused by the next `next()`.
    struct Frame: Equatable {
        var bytes: [UInt8]
        var time: Int64
        var wire: Int
    }

    /// Reads up to `maxFrames` frames; the error that ended the reading, if any.
    static func drain(_ r: CaptureReader, _ failures: inout [String], parse: Bool) -> (frames: [Frame], error: String?) {
        var frames: [Frame] = []
        var packet = ParsedPacket()
        do {
            while frames.count < maxFrames, let f = try r.next() {
                if parse, !CapturedFrame.timestampRange.contains(f.timestamp) {
                    failures.append("frame \(frames.count + 1): time \(f.timestamp) out of range")
                }
                if parse, let link = f.link { PacketParser.parse(f.bytes, link: link, into: &packet) }
                frames.append(Frame(bytes: Array(f.bytes), time: f.timestamp, wire: f.wireLength))
            }
            return (frames, nil)
        } catch {
            return (frames, "\(error)")
        }
    }

    static func checkOwnReader(_ ours: Result<CaptureReader, Error>, _ libpcap: Result<CaptureReader, Error>,
                               scratch: String) -> [String] {
        var failures: [String] = []
        guard case .success(let reader) = ours else {
            if case .failure(let e) = ours, "\(e)".contains("\n") || !"\(e)".contains(scratch) {
                failures.append("open error not one line naming the file: \(e)")
            }
            return failures
        }
        let (frames, error) = drain(reader, &failures, parse: true)
        if let error, error.contains("\n") || !error.hasPrefix(scratch + ": frame \(frames.count + 1): ")
            && !error.hasPrefix("error reading \(scratch)") {
            failures.append("error not one line naming the file and frame \(frames.count + 1): \(error)")
        }
        // Where libpcap reads the whole file (it reads pcapng of one link type, uncompressed).
        guard error == nil, frames.count < maxFrames, case .success(let l) = libpcap else { return failures }
        var ignored: [String] = []
        let (theirs, theirError) = drain(l, &ignored, parse: false)
        guard theirError == nil else { return failures }
        guard theirs.count == frames.count else {
            return failures + ["libpcap read \(theirs.count) frames, we read \(frames.count)"]
        }
        for (n, (a, b)) in zip(frames, theirs).enumerated() {
            if a.wire != b.wire || a.time != b.time || !a.bytes.starts(with: b.bytes) {
                failures.append("frame \(n + 1): ours \(a.bytes.count) bytes at \(a.time), wire \(a.wire); "
                    + "libpcap \(b.bytes.count) bytes at \(b.time), wire \(b.wire)")
                break
            }
        }
        return failures
    }

    static func checkLabels(_ text: UnsafeRawBufferPointer, piece: Int) -> [String] {
        func read(_ size: Int) -> Result<LabelTable, LabelError> {
            Result {
                var reader = LabelTable.Reader()
                var start = 0
                repeat {
                    let end = min(start + size, text.count)
                    try reader.read(UnsafeRawBufferPointer(rebasing: text[start..<end]))
                    start = end
                } while start < text.count
                return try reader.finish()
            }.mapError { $0 as! LabelError }
        }
        switch (read(max(text.count, 1)), read(piece)) {
        case (.failure(let x), .failure(let y)):
            return x.description == y.description ? [] : ["labels errors differ: \(x) / \(y) (pieces of \(piece))"]
        case (.success(let x), .success(let y)):
            guard x.names == y.names else { return ["label names differ: \(x.names) / \(y.names)"] }
            for f in [0, 1, 2, 3, 10, 100, 1000, 4096, LabelTable.maxFrame, LabelTable.maxFrame + 1]
                where x.label(ofFrame: f) != y.label(ofFrame: f) {
                return ["frame \(f): label \(x.label(ofFrame: f)) whole, \(y.label(ofFrame: f)) in pieces of \(piece)"]
            }
            return []
        case (.failure(let e), .success), (.success, .failure(let e)):
            return ["whole and in pieces of \(piece) disagree: \(e)"]
        }
    }
}
