#if canImport(Glibc)
import Glibc
#endif

/// The unread bytes of a stream in one large buffer, `start..<end`; the capture readers hand
/// frames out by reference into it (valid until the next read moves the bytes).
///
/// Not a memory map, although that would save the copy: a mapped file that shrinks while it is
/// read (tcpdump's `-W` ring buffer truncates its files as it wraps) kills the reader with SIGBUS
/// at the first access past the new end; and pipes and decompressors cannot be mapped at all.
/// Measured on a 5M-frame capture, the copy costs less than the run's noise.
struct StreamBuffer: ~Copyable {
    /// 4 MiB a read: a few hundred reads for a large capture, and room for any block the readers
    /// parse (larger ones are refused, skipped ones are streamed past).
    static let capacity = 4 << 20

    let source: ByteSource
    let base: UnsafeMutableRawPointer
    private(set) var start = 0
    private(set) var end = 0
    private var atEOF = false
    /// The read error that ended the data, if one did.
    private(set) var failure: Error?
    /// Bytes of the stream before `start`: where the reader is, for messages.
    private(set) var offset: Int64 = 0

    init(_ source: ByteSource) {
        self.source = source
        base = .allocate(byteCount: Self.capacity, alignment: 64)
    }

    deinit { base.deallocate() }

    var available: Int { end - start }
    var pointer: UnsafeMutableRawPointer { base + start }

    /// Makes `count` (≤ capacity) bytes available; false when the stream ends or fails first.
    mutating func ensure(_ count: Int) -> Bool {
        if end - start >= count { return true }
        refill()
        return end - start >= count
    }

    /// Marks `count` available bytes as read.
    mutating func consume(_ count: Int) {
        start += count
        offset += Int64(count)
    }

    /// Discards `count` bytes, reading past what is buffered without keeping it; false when the
    /// stream ends first (what was there is discarded).
    mutating func skip(_ count: Int64) -> Bool {
        var left = count
        while left > 0 {
            if end == start {
                refill()
                if end == start { return false }
            }
            let n = Int(min(left, Int64(end - start)))
            consume(n)
            left -= Int64(n)
        }
        return true
    }

    /// Moves the unread bytes to the front and reads until the buffer is full or the stream ends.
    /// A read error ends the data here and is kept in `failure`.
    private mutating func refill() {
        if start > 0 {
            if end > start { memmove(base, base + start, end - start) }
            end -= start
            start = 0
        }
        while !atEOF && end < Self.capacity {
            do {
                let n = try source.read(into: base + end, count: Self.capacity - end)
                if n > 0 { end += n } else { atEOF = true }
            } catch {
                atEOF = true
                failure = error
            }
        }
    }
}
