#if canImport(Glibc)
import Glibc
#endif
import CPcap
import PacketParser

/// One frame of a capture: its bytes (valid only until the next `next()`), its timestamp and
/// its length on the wire.
public struct CapturedFrame {
    public var bytes: UnsafeRawBufferPointer
    /// Capture time in nanoseconds since the epoch.
    public var timestamp: Int64
    public var wireLength: Int
}

extension CapturedFrame {
    /// The capture times a frame may carry: 2^62 ns either side of the epoch (the years 1823 to
    /// 2116). Scoring adds timeouts to packet times and subtracts one from another without
    /// overflow checks (the per-frame path); within this range neither can overflow. A plain pcap
    /// file's 32-bit seconds always fit (±2^31 s is ±2.1e18 ns); a pcapng file's 64-bit
    /// timestamp, scaled by its interface's resolution (down to 1 s) and shifted by its offset
    /// (any 64-bit number of seconds), reaches far beyond, and libpcap hands that out as is.
    public static let timestampRange: ClosedRange<Int64> = -(1 << 62)...(1 << 62)

    /// A frame libpcap handed out; `tv_usec` holds nanoseconds when the handle's precision is nano.
    /// nil when its time is outside `timestampRange`.
    init?(_ h: pcap_pkthdr, _ data: UnsafePointer<UInt8>?, nanoseconds: Bool) {
        let (seconds, o1) = Int64(h.ts.tv_sec).multipliedReportingOverflow(by: 1_000_000_000)
        let (fraction, o2) = Int64(h.ts.tv_usec).multipliedReportingOverflow(by: nanoseconds ? 1 : 1000)
        let (t, o3) = seconds.addingReportingOverflow(fraction)
        guard !(o1 || o2 || o3), Self.timestampRange.contains(t) else { return nil }
        self.init(bytes: UnsafeRawBufferPointer(start: data, count: Int(h.caplen)), timestamp: t,
                  wireLength: Int(h.len))
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

/// Reads pcap and pcapng files. libpcap opens every file (its header checks and error messages);
/// a plain pcap file is then read by `DirectPcap` in large blocks, without libpcap's two `fread`s
/// and its bookkeeping per frame (a third of a scoring run's instructions, callgrind). pcapng, and
/// any record libpcap might treat differently (an oversized or cut record), go through libpcap,
/// which takes over at that frame. Frames are handed out by reference into a buffer.
public final class CaptureReader {
    private let handle: OpaquePointer
    public let path: String
    public let linkType: LinkType
    /// libpcap's DLT name, e.g. `EN10MB` (docs/output.md `input.link_type`).
    public let linkTypeName: String
    /// libpcap's DLT number.
    public let dlt: Int32
    /// The plain pcap file read directly, until the end or a record it leaves to libpcap.
    /// @exclusivity(unchecked): a reader is used from one thread, and the runtime's dynamic
    /// checks on these two were a fifth of a scoring run's instructions (callgrind).
    @exclusivity(unchecked) private var direct: DirectPcap?
    /// Frames handed out so far, so libpcap can take over at the right frame.
    @exclusivity(unchecked) private var frames = 0

    /// Whether frames bypass libpcap now (false for pcapng, and once libpcap took over).
    public var readsDirectly: Bool { direct != nil }

    /// `direct: false` reads every frame through libpcap (tests compare the two paths).
    public init(path: String, direct: Bool = true) throws {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        // Nanosecond precision when the file has it; libpcap scales microsecond files up.
        guard let h = pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errbuf) else {
            throw CaptureError("cannot read capture \(path): \(String(cString: errbuf))")
        }
        let (lt, name, dlt) = try linkTypeOf(h, closingOnError: "cannot read capture \(path)")
        self.handle = h
        self.path = path
        self.linkType = lt
        self.linkTypeName = name
        self.dlt = dlt
        // Only a regular file named by path, the very file libpcap opened: "-" is libpcap's stdin,
        // and a second open of a pipe or FIFO would steal bytes from libpcap's stream.
        var libpcapFile = stat()
        if direct, path != "-", let f = pcap_file(h), fstat(fileno(f), &libpcapFile) == 0 {
            self.direct = DirectPcap(path: path, sameAs: libpcapFile)
        } else {
            self.direct = nil
        }
    }

    deinit { pcap_close(handle) }

    /// The next frame, nil at the end of the file. Throws on a read error (a cut file).
    public func next() throws -> CapturedFrame? {
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
        let rc = pcap_next_ex(handle, &header, &data)
        switch rc {
        case 1:
            // Opened with nanosecond precision: libpcap scales microsecond files up.
            guard let f = CapturedFrame(header!.pointee, data, nanoseconds: true) else {
                throw CapturedFrame.outOfRange(header!.pointee, "\(path): frame \(frames + 1)", nanoseconds: true)
            }
            return f
        case PCAP_ERROR_BREAK:
            return nil
        default:
            throw CaptureError("error reading \(path): \(String(cString: pcap_geterr(handle)))")
        }
    }
}

/// A plain pcap file (either byte order, microsecond or nanosecond timestamps) read with large
/// `read(2)` calls into one buffer, frames handed out by reference into it. It reads the records
/// libpcap would read the same way, and calls anything else `unusual`: a record longer than the
/// snap length, a cut record or header (a file cut short, or truncated while read), a read error.
/// Version 2.4 files only: libpcap swaps caplen and len in some older ones.
///
/// Not a memory map, although that would save the copy: a mapped file that shrinks while it is
/// read (tcpdump's `-W` ring buffer truncates its files as it wraps) kills the reader with SIGBUS
/// at the first access past the new end. Measured on a 5M-frame capture, the copy costs less than
/// the run's noise; what made libpcap slow is its per-frame work, which this avoids either way.
struct DirectPcap: ~Copyable {
    enum Next { case frame(CapturedFrame), end, unusual }

    private let fd: Int32
    private let buffer: UnsafeMutableRawPointer
    /// Unread bytes are `start..<end` of the buffer.
    private var start = 0
    private var end = 0
    private var atEOF = false
    /// A read failed: the data ends here, and libpcap, taking over, reports the error.
    private var failed = false
    private let swapped: Bool
    private let nanoseconds: Bool
    /// The file's snap length as libpcap applies it (none or too large: its maximum).
    private let snapLength: UInt32
    /// 4 MiB a read: a few hundred system calls for a large capture, and room for any record.
    private static let capacity = 4 << 20
    /// libpcap's largest record (MAXIMUM_SNAPLEN): longer ones it rejects or trims.
    private static let maxRecord: UInt32 = 262_144

    /// nil when the file is not a regular file, not the file `sameAs` describes (the one libpcap
    /// opened), not plain pcap 2.4 with a link-type field libpcap reads as is (pcapng, FCS bits),
    /// or cannot be read: the caller stays with libpcap.
    init?(path: String, sameAs opened: stat) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
              st.st_dev == opened.st_dev, st.st_ino == opened.st_ino else { close(fd); return nil }
        var header = [UInt8](repeating: 0, count: 24)
        guard read(fd, &header, 24) == 24 else { close(fd); return nil }
        let magic = header.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        var swapped = false, nano = false
        switch magic {
        case 0xa1b2_c3d4: break
        case 0xa1b2_3c4d: nano = true
        case 0xd4c3_b2a1: swapped = true
        case 0x4d3c_b2a1: swapped = true; nano = true
        default: close(fd); return nil
        }
        func field(_ at: Int) -> UInt32 {
            let v = header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
            return swapped ? v.byteSwapped : v
        }
        // Version 2.4 (major and minor, 16 bits each), and no FCS or other bits above the link type.
        guard field(4) == (swapped ? 0x0002_0004 : 0x0004_0002), field(20) >> 16 == 0 else { close(fd); return nil }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        self.fd = fd
        self.buffer = .allocate(byteCount: Self.capacity, alignment: 64)
        self.swapped = swapped
        self.nanoseconds = nano
        let snap = field(16)
        self.snapLength = snap == 0 || snap > Self.maxRecord ? Self.maxRecord : snap
    }

    deinit {
        buffer.deallocate()
        close(fd)
    }

    mutating func next() -> Next {
        if end - start < 16 {
            refill()
            if end == start { return failed ? .unusual : .end }
            if end - start < 16 { return .unusual }
        }
        var h = buffer + start
        var sec = h.loadUnaligned(as: UInt32.self)
        var frac = h.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        var caplen = h.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        var len = h.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        if swapped { sec = sec.byteSwapped; frac = frac.byteSwapped; caplen = caplen.byteSwapped; len = len.byteSwapped }
        // libpcap trims a record longer than the file's snap length (or, with none, than its
        // maximum) and rejects longer ones still: both are its to handle.
        guard caplen <= snapLength else { return .unusual }
        if end - start < 16 + Int(caplen) {
            refill()
            guard end - start >= 16 + Int(caplen) else { return .unusual }
            h = buffer + start
        }
        start += 16 + Int(caplen)
        // As libpcap 1.10 reads them, so the times are the same whichever reader hands them out:
        // signed (bpf_int32) in a file of the host's byte order, unsigned in a swapped one (its
        // SWAPLONG gives an unsigned value; measured, and found by the file-reader fuzzer). Cannot
        // overflow, and always within `CapturedFrame.timestampRange`: |ts| < 2^32 · 1.000001e9.
        let ts = swapped
            ? Int64(sec) * 1_000_000_000 + Int64(frac) * (nanoseconds ? 1 : 1000)
            : Int64(Int32(bitPattern: sec)) * 1_000_000_000 + Int64(Int32(bitPattern: frac)) * (nanoseconds ? 1 : 1000)
        return .frame(CapturedFrame(bytes: UnsafeRawBufferPointer(start: h + 16, count: Int(caplen)),
                                    timestamp: ts, wireLength: Int(len)))
    }

    /// Moves the unread bytes to the front (the frame handed out last is no longer valid: see
    /// `CapturedFrame`) and reads until the buffer is full or the file ends. A read error ends
    /// the data here; libpcap, taking over, reports it.
    private mutating func refill() {
        if start > 0 {
            if end > start { memmove(buffer, buffer + start, end - start) }
            end -= start
            start = 0
        }
        while !atEOF && end < Self.capacity {
            let n = read(fd, buffer + end, Self.capacity - end)
            if n > 0 { end += n } else if n < 0 && errno == EINTR { continue } else {
                atEOF = true
                failed = n < 0
            }
        }
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

    private let handle: OpaquePointer
    public let interface: String
    public let linkType: LinkType
    public let linkTypeName: String

    /// `snapLength` 256 covers Ethernet + two VLAN tags + IPv6 with extension headers + a full TCP
    /// header; scoring never reads payloads. `timeoutMilliseconds` bounds how stale the live
    /// status line and the Ctrl-C check can get.
    public init(interface: String, snapLength: Int32 = 256, timeoutMilliseconds: Int32 = 200) throws {
        var errbuf = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let h = pcap_create(interface, &errbuf) else {
            throw CaptureError("cannot capture on \(interface): \(String(cString: errbuf))")
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
            throw CaptureError("cannot capture on \(interface): pcap_setnonblock: \(String(cString: errbuf))")
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
            guard let f = CapturedFrame(header!.pointee, data, nanoseconds: nanoseconds) else {
                throw CapturedFrame.outOfRange(header!.pointee, "frame captured on \(interface)", nanoseconds: nanoseconds)
            }
            return .frame(f)
        case 0:
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let n = poll(&p, 1, timeoutMilliseconds)
            // EINTR is Ctrl-C arriving: the caller checks its flag on the timeout.
            if n < 0 && errno != EINTR {
                throw CaptureError("error capturing on \(interface): poll: \(String(cString: strerror(errno)))")
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
