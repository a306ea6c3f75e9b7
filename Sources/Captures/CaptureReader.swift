#if canImport(Glibc)
import Glibc
#endif
import SystemCalls
import CPcap
import PacketParser

/// One frame of a capture: its bytes (valid only until the next `next()`), its timestamp, its
/// length on the wire and the link type it starts with.
public struct CapturedFrame {
    public var bytes: UnsafeRawBufferPointer
    /// Capture time in nanoseconds since the epoch.
    public var timestamp: Int64
    public var wireLength: Int
    /// The link type of the interface the frame was captured on (a pcapng file may have several);
    /// nil for one ReflectGuard cannot parse (a frame that counts, but carries no IP).
    public var link: LinkType?

    public init(bytes: UnsafeRawBufferPointer, timestamp: Int64, wireLength: Int, link: LinkType?) {
        self.bytes = bytes
        self.timestamp = timestamp
        self.wireLength = wireLength
        self.link = link
    }
}

extension CapturedFrame {
    /// The capture times a frame may carry: 2^62 ns either side of the epoch (the years 1823 to
    /// 2116). Scoring adds timeouts to packet times and subtracts one from another without
    /// overflow checks (the per-frame path); within this range neither can overflow. A plain pcap
    /// file's 32-bit seconds always fit (±2^31 s is ±2.1e18 ns); a pcapng file's 64-bit
    /// timestamp, scaled by its interface's resolution (down to 1 s) and shifted by its offset
    /// (any 64-bit number of seconds), reaches far beyond.
    public static let timestampRange: ClosedRange<Int64> = -(1 << 62)...(1 << 62)

    /// A frame libpcap handed out; `tv_usec` holds nanoseconds when the handle's precision is nano.
    /// nil when its time is outside `timestampRange`.
    init?(_ h: pcap_pkthdr, _ data: UnsafePointer<UInt8>?, nanoseconds: Bool, link: LinkType) {
        let (seconds, o1) = Int64(h.ts.tv_sec).multipliedReportingOverflow(by: 1_000_000_000)
        let (fraction, o2) = Int64(h.ts.tv_usec).multipliedReportingOverflow(by: nanoseconds ? 1 : 1000)
        let (t, o3) = seconds.addingReportingOverflow(fraction)
        guard !(o1 || o2 || o3), Self.timestampRange.contains(t) else { return nil }
        self.init(bytes: UnsafeRawBufferPointer(start: data, count: Int(h.caplen)), timestamp: t,
                  wireLength: Int(h.len), link: link)
    }

    /// Why a frame's time was refused, in the caller's words for the frame.
    static func outOfRange(_ h: pcap_pkthdr, _ frame: String, nanoseconds: Bool) -> CaptureError {
        CaptureError("\(frame): time stamp \(h.ts.tv_sec) s + \(h.ts.tv_usec) \(nanoseconds ? "ns" : "µs") is outside "
            + "the years 1823 to 2116 (a corrupt time stamp, or a pcapng interface's time resolution or offset)")
    }
}

public struct CaptureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads a capture file, whatever form operators keep it in: pcap or pcapng, plain or compressed
/// (gzip, zstd, xz: told by their magic bytes and decompressed as a stream), a regular file, a
/// FIFO or standard input (`-`).
///
/// - pcapng is read by `PcapngReader` (several interfaces and link types, which libpcap refuses).
/// - A plain pcap file is opened by libpcap (its header checks and error messages) and then read
///   by `DirectPcap` in large blocks, without libpcap's two `fread`s and its bookkeeping per frame
///   (a third of a scoring run's instructions, callgrind). A record libpcap might treat
///   differently (an oversized or cut record) goes to libpcap, which takes over at that frame.
///   A compressed pcap file is read the same way, libpcap reading from a decompressor of its own.
/// - A pipe or FIFO is read once, by libpcap alone (through a stdio stream over our decompressor
///   when compressed): a second reader would steal bytes from the stream.
///
/// Frames are handed out by reference into a buffer.
public final class CaptureReader {
    private let handle: OpaquePointer?
    private let pcapng: PcapngReader?
    /// The stream libpcap reads when it does not read the file by its name.
    private let libpcapStream: CookieStream?
    public let path: String
    /// The link type of the capture (of its first interface, for pcapng).
    public let linkType: LinkType
    /// libpcap's DLT name, e.g. `EN10MB` (docs/output.md `input.link_type`).
    public let linkTypeName: String
    /// libpcap's DLT number.
    public let dlt: Int32
    /// The compression the file came in, nil when plain.
    public let compression: Compression?
    /// The plain pcap file read directly, until the end or a record it leaves to libpcap.
    /// @exclusivity(unchecked): a reader is used from one thread, and the runtime's dynamic
    /// checks on these two were a fifth of a scoring run's instructions (callgrind).
    @exclusivity(unchecked) private var direct: DirectPcap?
    /// Frames handed out so far, so libpcap can take over at the right frame.
    @exclusivity(unchecked) private var frames = 0

    /// Whether frames bypass libpcap now: pcapng always; plain pcap until libpcap takes over.
    public var readsDirectly: Bool { pcapng != nil || direct != nil }

    /// libpcap's names of every link type seen so far, in the order first seen (a pcapng file's
    /// interfaces may differ; a pcap file has one).
    public var linkTypeNames: [String] { pcapng?.linkTypeNames ?? [linkTypeName] }

    /// `direct: false` reads the file as libpcap alone reads it (tests and the fuzzer compare the
    /// two): by its name, uncompressed, pcapng only when all its interfaces share a link type.
    public init(path: String, direct: Bool = true) throws {
        self.path = path
        guard direct else {
            let h = try Self.libpcapOpen(path: path)
            (linkType, linkTypeName, dlt) = try linkTypeOf(h, closingOnError: "cannot read capture \(path)")
            handle = h
            pcapng = nil
            libpcapStream = nil
            compression = nil
            self.direct = nil
            return
        }
        let file = try FileSource.open(path)
        let (head, raw) = try PrefixedSource.peek(file, Compression.magicLength)
        compression = Compression(magic: head)
        let stream: ByteSource = try compression.map { try $0.decoder(raw, path: path) } ?? raw
        let (magic, content) = try PrefixedSource.peek(stream, 4)
        if magic == [0x0A, 0x0D, 0x0D, 0x0A] {
            let ng = try PcapngReader(content, path: path)
            let first = ng.firstInterface!
            pcapng = ng
            linkType = first.link!
            dlt = first.dlt
            linkTypeName = ng.linkTypeNames[0]
            handle = nil
            libpcapStream = nil
            self.direct = nil
            return
        }
        pcapng = nil
        var st = stat()
        let regular = path != "-" && fstat(file.fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        if regular && compression == nil {
            // libpcap opens the file by its name, and the direct reader checks it reads that very
            // file (a second open of the name could find another file since).
            let h = try Self.libpcapOpen(path: path)
            (linkType, linkTypeName, dlt) = try linkTypeOf(h, closingOnError: "cannot read capture \(path)")
            handle = h
            libpcapStream = nil
            var opened = stat()
            if let f = pcap_file(h), fstat(fileno(f), &opened) == 0, let again = try? FileSource.open(path) {
                var now = stat()
                let same = fstat(again.fd, &now) == 0 && now.st_dev == opened.st_dev && now.st_ino == opened.st_ino
                self.direct = same ? DirectPcap(again, link: linkType) : nil
            } else {
                self.direct = nil
            }
            return
        }
        // Compressed, or a stream that can be read only once: libpcap reads our stream.
        let cookie = CookieStream(content)
        let h = try cookie.open(path: path)
        (linkType, linkTypeName, dlt) = try linkTypeOf(h, closingOnError: "cannot read capture \(path)")
        handle = h
        libpcapStream = cookie
        // A compressed regular file can be opened again: the direct reader gets a decompressor of
        // its own, and libpcap, should it take over, reads its stream from the start.
        if regular, let compression, let again = try? FileSource.open(path),
           let decoder = try? compression.decoder(again, path: path) {
            self.direct = DirectPcap(decoder, link: linkType)
        } else {
            self.direct = nil
        }
    }

    private static func libpcapOpen(path: String) throws -> OpaquePointer {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        // Nanosecond precision when the file has it; libpcap scales microsecond files up.
        guard let h = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf) else {
            throw CaptureError("cannot read capture \(path): \(String(nulTerminated: errbuf))")
        }
        return h
    }

    deinit { if let handle { pcap_close(handle) } }

    /// The next frame, nil at the end of the file. Throws on a read error (a cut file) or, for
    /// pcapng, a malformed block; the message names the frame.
    @inline(__always)
    public func next() throws -> CapturedFrame? {
        if let pcapng { return try pcapng.next() }
        if direct != nil {
            switch direct!.next() {
            case .frame(let f):
                frames &+= 1
                return f
            case .end:
                return nil
            case .unusual:
                // libpcap has read only the file header: skip what was already handed out.
                direct = nil
                for _ in 0..<frames { _ = try libpcapNext() }
            }
        }
        let f = try libpcapNext()
        if f != nil { frames &+= 1 }
        return f
    }

    private func libpcapNext() throws -> CapturedFrame? {
        var header: UnsafeMutablePointer<pcap_pkthdr>? = nil
        var data: UnsafePointer<UInt8>? = nil
        let rc = pcap_next_ex(handle!, &header, &data)
        switch rc {
        case 1:
            // Opened with nanosecond precision: libpcap scales microsecond files up.
            guard let f = CapturedFrame(header!.pointee, data, nanoseconds: true, link: linkType) else {
                throw CapturedFrame.outOfRange(header!.pointee, "\(path): frame \(frames + 1)", nanoseconds: true)
            }
            return f
        case PCAP_ERROR_BREAK:
            return nil
        default:
            // Our decompressor's own words when it is what failed under libpcap.
            if let e = libpcapStream?.failure { throw CaptureError("\(path): frame \(frames + 1): \(e)") }
            throw CaptureError("error reading \(path): \(String(cString: pcap_geterr(handle!)))")
        }
    }
}

/// A byte source as a stdio stream (glibc's `fopencookie`), for libpcap, which reads `FILE *`s:
/// how it reads a compressed pcap file, a FIFO or standard input after we looked at its first
/// bytes. libpcap closes the stream with its handle.
final class CookieStream {
    let source: ByteSource
    /// The error the source threw (libpcap only sees EIO).
    var failure: Error?

    init(_ source: ByteSource) { self.source = source }

    func open(path: String) throws -> OpaquePointer {
        var io = rg_cookie_io_functions_t()
        io.read = { cookie, buffer, size in
            let stream = Unmanaged<CookieStream>.fromOpaque(cookie!).takeUnretainedValue()
            do {
                return try stream.source.read(into: UnsafeMutableRawPointer(buffer!), count: size)
            } catch {
                stream.failure = error
                errno = EIO
                return -1
            }
        }
        io.close = { cookie in
            Unmanaged<CookieStream>.fromOpaque(cookie!).release()
            return 0
        }
        let cookie = Unmanaged.passRetained(self).toOpaque()
        guard let file = rg_fopencookie(cookie, "r", io) else {
            Unmanaged<CookieStream>.fromOpaque(cookie).release()
            throw CaptureError("cannot read capture \(path): fopencookie: \(String(cString: strerror(errno)))")
        }
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let h = pcap_fopen_offline_with_tstamp_precision(file, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf) else {
            // libpcap leaves a stream it could not read to its caller.
            fclose(file)
            if let failure { throw CaptureError("cannot read capture \(path): \(failure)") }
            throw CaptureError("cannot read capture \(path): \(String(nulTerminated: errbuf))")
        }
        return h
    }
}

/// A plain pcap file (either byte order, microsecond or nanosecond timestamps) read in large
/// pieces into one buffer, frames handed out by reference into it. It reads the records libpcap
/// would read the same way, and calls anything else `unusual`: a record longer than the snap
/// length, a cut record or header (a file cut short, or truncated while read), a read error.
/// Version 2.4 files only: libpcap swaps caplen and len in some older ones.
struct DirectPcap: ~Copyable {
    enum Next { case frame(CapturedFrame), end, unusual }

    private var buffer: StreamBuffer
    private let swapped: Bool
    private let nanoseconds: Bool
    private let link: LinkType
    /// The file's snap length as libpcap applies it (none or too large: its maximum).
    private let snapLength: UInt32
    /// libpcap's largest record (MAXIMUM_SNAPLEN): longer ones it rejects or trims.
    private static let maxRecord: UInt32 = 262_144

    /// nil when the stream is not plain pcap 2.4 with a link-type field libpcap reads as is
    /// (pcapng, FCS bits), or cannot be read: the caller stays with libpcap.
    init?(_ source: ByteSource, link: LinkType) {
        var buffer = StreamBuffer(source)
        guard buffer.ensure(24) else { return nil }
        let header = buffer.pointer
        let magic = header.loadUnaligned(as: UInt32.self)
        var swapped = false, nano = false
        switch magic {
        case 0xa1b2_c3d4: break
        case 0xa1b2_3c4d: nano = true
        case 0xd4c3_b2a1: swapped = true
        case 0x4d3c_b2a1: swapped = true; nano = true
        default: return nil
        }
        func field(_ at: Int) -> UInt32 {
            let v = header.loadUnaligned(fromByteOffset: at, as: UInt32.self)
            return swapped ? v.byteSwapped : v
        }
        // Version 2.4 (major and minor, 16 bits each), and no FCS or other bits above the link type.
        guard field(4) == (swapped ? 0x0002_0004 : 0x0004_0002), field(20) >> 16 == 0 else { return nil }
        let snap = field(16)
        buffer.consume(24)
        self.buffer = buffer
        self.swapped = swapped
        self.nanoseconds = nano
        self.link = link
        self.snapLength = snap == 0 || snap > Self.maxRecord ? Self.maxRecord : snap
    }

    @inline(__always)
    mutating func next() -> Next {
        guard buffer.ensure(16) else { return buffer.available == 0 && buffer.failure == nil ? .end : .unusual }
        var h = buffer.pointer
        var sec = h.loadUnaligned(as: UInt32.self)
        var frac = h.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        var caplen = h.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        var len = h.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        if swapped { sec = sec.byteSwapped; frac = frac.byteSwapped; caplen = caplen.byteSwapped; len = len.byteSwapped }
        // libpcap trims a record longer than the file's snap length (or, with none, than its
        // maximum) and rejects longer ones still: both are its to handle.
        guard caplen <= snapLength else { return .unusual }
        guard buffer.ensure(16 + Int(caplen)) else { return .unusual }
        h = buffer.pointer
        buffer.consume(16 + Int(caplen))
        // As libpcap 1.10 reads them, so the times are the same whichever reader hands them out:
        // signed (bpf_int32) in a file of the host's byte order, unsigned in a swapped one (its
        // SWAPLONG gives an unsigned value; measured, and found by the file-reader fuzzer). Cannot
        // overflow, and always within `CapturedFrame.timestampRange`: |ts| < 2^32 · 1.000001e9.
        let ts = swapped
            ? Int64(sec) * 1_000_000_000 + Int64(frac) * (nanoseconds ? 1 : 1000)
            : Int64(Int32(bitPattern: sec)) * 1_000_000_000 + Int64(Int32(bitPattern: frac)) * (nanoseconds ? 1 : 1000)
        return .frame(CapturedFrame(bytes: UnsafeRawBufferPointer(start: h + 16, count: Int(caplen)),
                                    timestamp: ts, wireLength: Int(len), link: link))
    }
}

/// Observes a live interface through libpcap: never injects, never changes the system (it turns
/// promiscuous mode off). Frames are handed out by reference into libpcap's ring: no copy.
public final class LiveCapture {
    public enum Event {
        case frame(CapturedFrame)
        /// The read timeout passed with no frame: the caller refreshes its status and checks for
        /// Ctrl-C, then reads again.
        case timeout
    }

    let handle: OpaquePointer
    public let interface: String
    public let linkType: LinkType
    public let linkTypeName: String

    /// `snapLength` 256 covers Ethernet + two VLAN tags + IPv6 with extension headers + a full TCP
    /// header; scoring never reads payloads. `timeoutMilliseconds` bounds how stale the live
    /// status line and the Ctrl-C check can get.
    public init(interface: String, snapLength: Int32 = 256, timeoutMilliseconds: Int32 = 200) throws {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let h = pcap_create(interface, &errbuf) else {
            throw CaptureError("cannot capture on \(interface): \(String(nulTerminated: errbuf))")
        }
        func fail(_ what: String) -> CaptureError {
            let msg = CaptureError("cannot capture on \(interface): \(what): \(String(cString: pcap_geterr(h)))")
            pcap_close(h)
            return msg
        }
        guard pcap_set_snaplen(h, snapLength) == 0 else { throw fail("pcap_set_snaplen") }
        guard pcap_set_promisc(h, 0) == 0 else { throw fail("pcap_set_promisc") }
        guard pcap_set_timeout(h, timeoutMilliseconds) == 0 else { throw fail("pcap_set_timeout") }
        // Nanosecond timestamps when the kernel offers them; microseconds otherwise (the reader
        // scales by the precision libpcap reports).
        _ = pcap_set_tstamp_precision(h, Int32(PCAP_TSTAMP_PRECISION_NANO))
        // A 16 MiB ring absorbs floods between two reads; libpcap's 2 MiB default drops early.
        _ = pcap_set_buffer_size(h, 16 << 20)
        // Frames as they arrive, not when a TPACKET_V3 block fills: the status line is live.
        _ = pcap_set_immediate_mode(h, 1)
        let rc = pcap_activate(h)
        if rc < 0 {
            // PCAP_ERROR_NO_SUCH_DEVICE, PCAP_ERROR_PERM_DENIED, …: libpcap's text names which.
            let detail = rc == PCAP_ERROR_PERM_DENIED ? "permission denied (needs CAP_NET_RAW)"
                : String(cString: pcap_statustostr(rc)) + " " + String(cString: pcap_geterr(h))
            pcap_close(h)
            throw CaptureError("cannot capture on \(interface): \(detail)")
        }
        let (lt, name, _) = try linkTypeOf(h, closingOnError: "cannot capture on \(interface)")
        self.handle = h
        self.interface = interface
        self.linkType = lt
        self.linkTypeName = name
        self.nanoseconds = pcap_get_tstamp_precision(h) == Int32(PCAP_TSTAMP_PRECISION_NANO)
        self.timeoutMilliseconds = timeoutMilliseconds
        // libpcap's read timeout may never fire while no packet arrives (pcap(3PCAP): on some
        // platforms the timer starts with the first packet; measured here: a quiet interface
        // blocked pcap_next_ex for good). So: non-blocking reads, and our own poll with a timeout.
        if pcap_setnonblock(h, 1, &errbuf) != 0 {
            pcap_close(h)
            throw CaptureError("cannot capture on \(interface): pcap_setnonblock: \(String(nulTerminated: errbuf))")
        }
        let fd = pcap_get_selectable_fd(h)
        guard fd >= 0 else {
            pcap_close(h)
            throw CaptureError("cannot capture on \(interface): no selectable descriptor")
        }
        self.fd = fd
    }

    private let nanoseconds: Bool
    private let timeoutMilliseconds: Int32
    private let fd: Int32

    deinit { pcap_close(handle) }

    public func next() throws -> Event {
        var header: UnsafeMutablePointer<pcap_pkthdr>? = nil
        var data: UnsafePointer<UInt8>? = nil
        let rc = pcap_next_ex(handle, &header, &data)
        switch rc {
        case 1:
            // The kernel's clock, so only a system clock set past 2116 gets here.
            guard let f = CapturedFrame(header!.pointee, data, nanoseconds: nanoseconds, link: linkType) else {
                throw CapturedFrame.outOfRange(header!.pointee, "frame captured on \(interface)", nanoseconds: nanoseconds)
            }
            return .frame(f)
        case 0:
            // A signal (Ctrl-C) restarts the wait; the caller checks its flag on the timeout.
            do throws(SystemCallError) {
                _ = try pollOne(fd, timeoutMilliseconds: timeoutMilliseconds, name: "poll")
            } catch {
                throw CaptureError("error capturing on \(interface): poll: \(error.reason)")
            }
            return .timeout
        default:
            throw CaptureError("error capturing on \(interface): \(String(cString: pcap_geterr(handle)))")
        }
    }

    /// Packets the kernel received and dropped (ring full) so far, as libpcap reports them.
    public func statistics() -> (received: UInt32, dropped: UInt32)? {
        var s = pcap_stat()
        guard pcap_stats(handle, &s) == 0 else { return nil }
        return (s.ps_recv, s.ps_drop)
    }
}

/// The link type of an open handle, with libpcap's DLT name (docs/output.md `input.link_type`) and
/// number; closes the handle and throws when ReflectGuard cannot parse that link type.
private func linkTypeOf(_ h: OpaquePointer, closingOnError context: String) throws -> (LinkType, String, Int32) {
    let dlt = pcap_datalink(h)
    let name = pcap_datalink_val_to_name(dlt).map { String(cString: $0) } ?? "DLT_\(dlt)"
    guard let lt = LinkType(dlt: dlt) else {
        pcap_close(h)
        throw CaptureError("\(context): unsupported link type \(name) (\(dlt))")
    }
    return (lt, name, dlt)
}
