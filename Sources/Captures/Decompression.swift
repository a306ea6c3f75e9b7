#if canImport(Glibc)
import Glibc
#endif
import CLzma
import CZlib
import CZstd

/// The compressed formats a capture may come in, told by their magic bytes, never by the file's
/// name: operators keep `.pcap.gz` from logrotate, `.pcapng.zst` from their archives, `.xz` from
/// anywhere, and names lie. Each is decompressed as a stream through a fixed buffer, never whole
/// into memory or onto disk; concatenated members or frames (what `cat a.gz b.gz` makes) continue.
public enum Compression: String, Sendable {
    case gzip, zstd, xz

    /// The format whose magic number `head` starts with; nil for anything else (uncompressed).
    public init?(magic head: [UInt8]) {
        if head.starts(with: [0x1f, 0x8b]) { self = .gzip }
        else if head.starts(with: [0x28, 0xb5, 0x2f, 0xfd]) { self = .zstd }
        else if head.starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) { self = .xz }
        else { return nil }
    }

    /// The longest magic number above.
    static let magicLength = 6

    /// A source that hands out the decompressed bytes of `upstream`.
    func decoder(_ upstream: ByteSource, path: String) throws -> ByteSource {
        switch self {
        case .gzip: return try GzipSource(upstream, path: path)
        case .zstd: return try ZstdSource(upstream, path: path)
        case .xz: return try XzSource(upstream, path: path)
        }
    }
}

/// Compressed input is read in pieces of this size: a few hundred reads for a large capture.
private let compressedPiece = 1 << 18

/// gzip through zlib's inflate.
final class GzipSource: ByteSource {
    private var z = z_stream()
    private let upstream: ByteSource
    private let input: UnsafeMutableRawPointer
    private let path: String
    private var upstreamEnded = false
    /// Between two gzip members: a stream that ends exactly here is complete.
    private var atMemberEnd = false
    /// An error met after some bytes of a read were produced: those are handed out first, so
    /// the frames before the damage are scored, and the error comes with the next read.
    private var pending: CaptureError?

    init(_ upstream: ByteSource, path: String) throws {
        self.upstream = upstream
        self.path = path
        input = .allocate(byteCount: compressedPiece, alignment: 16)
        guard rg_inflate_init_gzip(&z) == Z_OK else {
            input.deallocate()
            throw CaptureError("cannot read capture \(path): zlib could not start (\(z.msg.map { String(cString: $0) } ?? String(cString: zError(Z_MEM_ERROR))))")
        }
    }

    deinit {
        inflateEnd(&z)
        input.deallocate()
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let pending { throw pending }
        z.next_out = buffer.assumingMemoryBound(to: Bytef.self)
        z.avail_out = UInt32(clamping: count)
        do {
            try inflateInto(count)
        } catch let e as CaptureError {
            guard produced(count) > 0 else { throw e }
            pending = e
        }
        return produced(count)
    }

    private func inflateInto(_ count: Int) throws {
        while z.avail_out > 0 {
            if z.avail_in == 0 && !upstreamEnded {
                let n = try upstream.read(into: input, count: compressedPiece)
                if n == 0 { upstreamEnded = true } else {
                    z.next_in = input.assumingMemoryBound(to: Bytef.self)
                    z.avail_in = UInt32(n)
                }
            }
            if z.avail_in == 0 && upstreamEnded {
                if atMemberEnd { return }
                // The data ends inside a member: reported after what was inflated, as for an
                // uncompressed file cut short.
                throw CaptureError("error reading \(path): the gzip data is cut short (unexpected end of file)")
            }
            let boundary = atMemberEnd
            if boundary, z.next_in[0] == 0 {
                // Zeros after the last member (dd's or a tape's padding): the end, as gzip -d takes it.
                guard try restIsZeros() else { throw trailingGarbage() }
                return
            }
            atMemberEnd = false
            let rc = inflate(&z, Z_NO_FLUSH)
            if rc == Z_STREAM_END {
                // Another member may follow (`cat a.gz b.gz`): start it afresh.
                atMemberEnd = true
                inflateReset(&z)
                continue
            }
            if rc == Z_BUF_ERROR { continue }
            // Not a member's header where one would start: what gzip -d reports as "trailing
            // garbage ignored" after decompressing the members.
            if boundary && rc == Z_DATA_ERROR { throw trailingGarbage() }
            guard rc == Z_OK else {
                let why = z.msg.map { String(cString: $0) } ?? String(cString: zError(rc))
                throw CaptureError("error reading \(path): corrupt gzip data (\(why))")
            }
        }
    }

    private func produced(_ count: Int) -> Int { count - Int(z.avail_out) }

    private func trailingGarbage() -> CaptureError {
        CaptureError("error reading \(path): data after the end of the gzip data is not gzip (ignored, as gzip -d does)")
    }

    /// Whether the input from here to its end is all zeros; consumes it.
    private func restIsZeros() throws -> Bool {
        while true {
            let rest = UnsafeBufferPointer(start: z.next_in, count: Int(z.avail_in))
            guard rest.allSatisfy({ $0 == 0 }) else { return false }
            z.avail_in = 0
            guard !upstreamEnded else { return true }
            let n = try upstream.read(into: input, count: compressedPiece)
            if n == 0 { upstreamEnded = true; return true }
            z.next_in = input.assumingMemoryBound(to: Bytef.self)
            z.avail_in = UInt32(n)
        }
    }
}

/// zstd through libzstd's streaming decoder.
final class ZstdSource: ByteSource {
    private let stream: OpaquePointer
    private let upstream: ByteSource
    private let input: UnsafeMutableRawPointer
    private var inBuffer: ZSTD_inBuffer
    private let path: String
    private var upstreamEnded = false
    /// `ZSTD_decompressStream` returns 0 exactly when a frame is complete.
    private var atFrameEnd = true
    /// As in `GzipSource`: an error after some output comes with the next read.
    private var pending: CaptureError?

    /// Frames needing a window beyond 2^27 bytes (128 MiB, libzstd's own default limit) are
    /// refused with the library's message: memory stays bounded whatever the file says.
    init(_ upstream: ByteSource, path: String) throws {
        guard let s = ZSTD_createDStream() else { throw CaptureError("cannot read capture \(path): libzstd could not start") }
        stream = s
        _ = ZSTD_DCtx_setParameter(s, ZSTD_d_windowLogMax, 27)
        self.upstream = upstream
        self.path = path
        input = .allocate(byteCount: compressedPiece, alignment: 16)
        inBuffer = ZSTD_inBuffer(src: UnsafeRawPointer(input), size: 0, pos: 0)
    }

    deinit {
        ZSTD_freeDStream(stream)
        input.deallocate()
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let pending { throw pending }
        var out = ZSTD_outBuffer(dst: buffer, size: count, pos: 0)
        do {
            try decompress(into: &out)
        } catch let e as CaptureError {
            guard out.pos > 0 else { throw e }
            pending = e
        }
        return out.pos
    }

    private func decompress(into out: inout ZSTD_outBuffer) throws {
        while out.pos < out.size {
            if inBuffer.pos == inBuffer.size && !upstreamEnded {
                let n = try upstream.read(into: input, count: compressedPiece)
                if n == 0 { upstreamEnded = true } else { inBuffer = ZSTD_inBuffer(src: UnsafeRawPointer(input), size: n, pos: 0) }
            }
            let before = out.pos
            if inBuffer.pos == inBuffer.size && upstreamEnded {
                // Flush what the decoder still holds; then the end, or a frame cut short.
                let rc = ZSTD_decompressStream(stream, &out, &inBuffer)
                if ZSTD_isError(rc) != 0 { throw corrupt(rc) }
                if out.pos > before { atFrameEnd = rc == 0; continue }
                if atFrameEnd { return }
                throw CaptureError("error reading \(path): the zstd data is cut short (unexpected end of file)")
            }
            let rc = ZSTD_decompressStream(stream, &out, &inBuffer)
            if ZSTD_isError(rc) != 0 { throw corrupt(rc) }
            atFrameEnd = rc == 0
        }
    }

    private func corrupt(_ rc: Int) -> CaptureError {
        CaptureError("error reading \(path): corrupt zstd data (\(String(cString: ZSTD_getErrorName(rc))))")
    }
}

/// xz through liblzma's stream decoder.
final class XzSource: ByteSource {
    private var s = lzma_stream()
    private let upstream: ByteSource
    private let input: UnsafeMutableRawPointer
    private let path: String
    private var upstreamEnded = false
    private var streamEnded = false
    /// As in `GzipSource`: an error after some output comes with the next read.
    private var pending: CaptureError?

    /// 256 MiB of decoder memory at most: `xz -9` needs 65 MiB; a file asking for more is refused
    /// with liblzma's message, not allowed to take the machine's memory.
    static let memoryLimit: UInt64 = 256 << 20

    init(_ upstream: ByteSource, path: String) throws {
        self.upstream = upstream
        self.path = path
        rg_lzma_stream_clear(&s)
        input = .allocate(byteCount: compressedPiece, alignment: 16)
        // LZMA_CONCATENATED: `cat a.xz b.xz` decodes as one stream, as xz(1) does.
        let rc = lzma_stream_decoder(&s, Self.memoryLimit, RG_LZMA_CONCATENATED)
        guard rc == LZMA_OK else {
            input.deallocate()
            throw CaptureError("cannot read capture \(path): liblzma could not start (error \(rc.rawValue))")
        }
    }

    deinit {
        lzma_end(&s)
        input.deallocate()
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let pending { throw pending }
        guard !streamEnded else { return 0 }
        s.next_out = buffer.assumingMemoryBound(to: UInt8.self)
        s.avail_out = count
        do {
            try decode()
        } catch let e as CaptureError {
            guard count - s.avail_out > 0 else { throw e }
            pending = e
        }
        return count - s.avail_out
    }

    private func decode() throws {
        while s.avail_out > 0 {
            if s.avail_in == 0 && !upstreamEnded {
                let n = try upstream.read(into: input, count: compressedPiece)
                if n == 0 { upstreamEnded = true } else {
                    s.next_in = UnsafePointer(input.assumingMemoryBound(to: UInt8.self))
                    s.avail_in = n
                }
            }
            let rc = lzma_code(&s, upstreamEnded ? LZMA_FINISH : LZMA_RUN)
            if rc == LZMA_STREAM_END { streamEnded = true; return }
            if rc == LZMA_OK { continue }
            throw CaptureError("error reading \(path): " + Self.describe(rc))
        }
    }

    static func describe(_ rc: lzma_ret) -> String {
        switch rc {
        case LZMA_BUF_ERROR: return "the xz data is cut short (unexpected end of file)"
        case LZMA_MEMLIMIT_ERROR: return "the xz data needs more than \(memoryLimit >> 20) MiB to decode"
        case LZMA_FORMAT_ERROR: return "not xz data"
        case LZMA_OPTIONS_ERROR: return "unsupported xz options"
        case LZMA_DATA_ERROR: return "corrupt xz data"
        default: return "xz decoder error \(rc.rawValue)"
        }
    }
}
