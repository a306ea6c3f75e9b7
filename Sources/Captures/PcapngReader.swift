#if canImport(Glibc)
import Glibc
#endif
import CPcap
import PacketParser

/// Reads pcapng (draft-ietf-opsawg-pcapng) as Wireshark writes and reads it, where libpcap reads
/// only files whose interfaces all share one link type and snap length: what dumpcap writes when
/// it captures on several interfaces, and what `mergecap` makes, libpcap refuses outright.
///
/// - Sections: a section header block in either byte order starts a section, and another may
///   follow (`cat a.pcapng b.pcapng`); each section has its own interfaces.
/// - Interfaces: one description block each, with its own link type, snap length, time resolution
///   (`if_tsresol`, a power of 10 or of 2) and time offset (`if_tsoffset`, seconds); every frame
///   keeps the link type of the interface it was captured on.
/// - Packets: enhanced, simple and the obsolete packet blocks. Every other block (name
///   resolution, interface statistics, decryption secrets, custom, unknown) is skipped by its
///   length without being held in memory.
///
/// A malformed block (a length that is not a multiple of 4 or disagrees with its copy at the end,
/// an interface that was never described, a packet longer than its block, a block larger than the
/// reader's buffer) or a file cut inside a block ends the capture with one error naming the frame
/// it would have been and the byte where its block starts; the frames before it were handed out.
/// Memory is the 4 MiB buffer and the interface table (at most `maxInterfaces`).
final class PcapngReader {
    struct Interface {
        /// nil for a link type ReflectGuard cannot parse: its frames count but carry no IP.
        var link: LinkType?
        /// libpcap's DLT number for the interface's LINKTYPE.
        var dlt: Int32
        var snapLength: UInt32
        var resolution: TimeResolution
        /// `if_tsoffset` in nanoseconds; nil when that does not fit 64 bits (every frame's time is
        /// then out of range).
        var offset: Int64?
    }

    /// How raw timestamps become nanoseconds.
    enum TimeResolution: Equatable {
        /// 10^-n seconds a unit.
        case decimal(UInt8)
        /// 2^-n seconds a unit.
        case binary(UInt8)

        static let microseconds = TimeResolution.decimal(6)

        init(option byte: UInt8) {
            self = byte & 0x80 != 0 ? .binary(byte & 0x7f) : .decimal(byte)
        }

        /// Nanoseconds since the epoch for `units`, nil when the result leaves 64 bits.
        func nanoseconds(_ units: UInt64) -> Int64? {
            switch self {
            case .decimal(let n) where n <= 9:
                let (v, o) = units.multipliedReportingOverflow(by: Self.powersOf10[9 - Int(n)])
                return o || v > UInt64(Int64.max) ? nil : Int64(v)
            case .decimal(let n):
                // Finer than a nanosecond: 10^(n-9) units a nanosecond; past 10^19 every time is 0.
                let d = Int(n) - 9
                return d >= Self.powersOf10.count ? 0 : Int64(units / Self.powersOf10[d])
            case .binary(let n):
                // units * 10^9 / 2^n in 128 bits.
                let (high, low) = units.multipliedFullWidth(by: 1_000_000_000)
                let shift = Int(n)
                let v: UInt64
                if shift == 0 { guard high == 0 else { return nil }; v = low }
                else if shift < 64 {
                    guard high >> shift == 0 else { return nil }
                    v = high << (64 - shift) | low >> shift
                } else {
                    v = shift >= 128 ? 0 : high >> (shift - 64)
                }
                return v > UInt64(Int64.max) ? nil : Int64(v)
            }
        }

        static let powersOf10: [UInt64] = (0...19).map { p in (0..<p).reduce(UInt64(1)) { v, _ in v * 10 } }
    }

    static let sectionHeader: UInt32 = 0x0A0D_0D0A
    static let byteOrderMagic: UInt32 = 0x1A2B_3C4D
    /// Interfaces one section may describe: each costs 32 bytes here, and a file of nothing but
    /// interface blocks must not make the table grow without bound.
    static let maxInterfaces = 1 << 20

    let path: String
    /// @exclusivity(unchecked) on the state `next()` touches: a reader is used from one thread,
    /// and the runtime's dynamic exclusivity checks cost a fifth of a scoring run's instructions
    /// in the plain-pcap reader (callgrind) before it was marked the same way.
    @exclusivity(unchecked) private var buffer: StreamBuffer
    @exclusivity(unchecked) private var swapped = false
    @exclusivity(unchecked) private var interfaces: [Interface] = []
    /// Frames handed out so far.
    @exclusivity(unchecked) private(set) var frames = 0
    /// Sections seen so far.
    private(set) var sections = 0
    /// libpcap's names of the link types seen, in the order first seen.
    private(set) var linkTypeNames: [String] = []
    private var namedDLTs: Set<Int32> = []
    /// The first interface of the file: what `CaptureReader.linkType` reports.
    private(set) var firstInterface: Interface?

    /// Reads the section header and the blocks up to the first interface description (so the
    /// capture's link type is known), or the first packet block, whichever comes first.
    init(_ source: ByteSource, path: String) throws {
        self.path = path
        buffer = StreamBuffer(source)
        guard buffer.ensure(12), buffer.pointer.loadUnaligned(as: UInt32.self) == Self.sectionHeader else {
            throw CaptureError("cannot read capture \(path): not a pcapng file (no section header block first)")
        }
        while firstInterface == nil {
            guard buffer.ensure(8) else { break }
            if [2, 3, 6].contains(field(0)) { break }
            guard try block() == nil else { break }
        }
        guard let first = firstInterface else {
            throw CaptureError("cannot read capture \(path): the pcapng file describes no interface")
        }
        guard first.link != nil else {
            let name = pcap_datalink_val_to_name(first.dlt).map { String(cString: $0) } ?? "DLT_\(first.dlt)"
            throw CaptureError("cannot read capture \(path): unsupported link type \(name) (\(first.dlt))")
        }
    }

    /// The next frame, nil at the end; throws on a malformed block or a file cut inside one.
    @inline(__always)
    func next() throws -> CapturedFrame? {
        while true {
            guard buffer.ensure(8) else {
                if buffer.available == 0 && buffer.failure == nil { return nil }
                throw cut(needing: 8)
            }
            if let frame = try block() { return frame }
        }
    }

    /// A 32-bit field of the block at the buffer's start, in the section's byte order.
    @inline(__always)
    private func field(_ at: Int) -> UInt32 {
        let v = buffer.pointer.loadUnaligned(fromByteOffset: at, as: UInt32.self)
        return swapped ? v.byteSwapped : v
    }

    @inline(__always)
    private func field16(_ at: Int) -> UInt16 {
        let v = buffer.pointer.loadUnaligned(fromByteOffset: at, as: UInt16.self)
        return swapped ? v.byteSwapped : v
    }

    /// Reads one block at the buffer's start (8 bytes available): a frame for a packet block,
    /// nil after any other.
    @inline(__always)
    private func block() throws -> CapturedFrame? {
        let type = buffer.pointer.loadUnaligned(as: UInt32.self)
        if type == Self.sectionHeader {
            try sectionHeader()
            return nil
        }
        let length = field(4)
        guard length >= 12, length % 4 == 0 else {
            throw malformed("block type \(hex(type)) has length \(length) (a multiple of 4, at least 12)")
        }
        switch swapped ? type.byteSwapped : type {
        case 6: return try enhancedPacket(Int(length))
        case 3: return try simplePacket(Int(length))
        case 2: return try obsoletePacket(Int(length))
        case 1: try interfaceDescription(Int(length)); return nil
        default:
            // Name resolution, statistics, secrets, custom and unknown blocks: skipped by length,
            // streamed past whatever their size.
            guard buffer.skip(Int64(length)) else { throw cut(needing: Int(length)) }
            return nil
        }
    }

    /// Makes the whole block available and checks its trailing length.
    @inline(__always)
    private func whole(_ length: Int, minimum: Int, _ what: String) throws {
        guard length >= minimum else { throw malformed("\(what) of \(length) bytes (at least \(minimum))") }
        guard length <= StreamBuffer.capacity else {
            throw malformed("\(what) of \(length) bytes is larger than the reader's \(StreamBuffer.capacity >> 20) MiB")
        }
        guard buffer.ensure(length) else { throw cut(needing: length) }
        guard field(length - 4) == UInt32(length) else {
            throw malformed("\(what) length \(length) differs from its trailing copy \(field(length - 4))")
        }
    }

    private func sectionHeader() throws {
        guard buffer.ensure(12) else { throw cut(needing: 12) }
        let magic = buffer.pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        if magic == Self.byteOrderMagic { swapped = false } else if magic == Self.byteOrderMagic.byteSwapped { swapped = true } else {
            throw malformed("section header block has byte-order magic \(hex(magic)) (expected 0x1a2b3c4d)")
        }
        let length = Int(field(4))
        guard length % 4 == 0 else { throw malformed("section header block has length \(length) (a multiple of 4)") }
        try whole(length, minimum: 28, "section header block")
        let major = field16(12)
        guard major == 1 else { throw malformed("section header block has version \(major).\(field16(14)) (1.x expected)") }
        interfaces.removeAll(keepingCapacity: true)
        sections += 1
        buffer.consume(length)
    }

    private func interfaceDescription(_ length: Int) throws {
        try whole(length, minimum: 20, "interface description block")
        guard interfaces.count < Self.maxInterfaces else {
            throw malformed("more than \(Self.maxInterfaces) interfaces in one section")
        }
        let linktype = field16(8)
        var interface = Interface(link: nil, dlt: Self.dlt(linktype: linktype), snapLength: field(12),
                                  resolution: .microseconds, offset: 0)
        interface.link = LinkType(dlt: interface.dlt)
        // Options: code, length, value padded to 32 bits; opt_endofopt (0) or the block's end stops.
        var at = 16
        let optionsEnd = length - 4
        while at + 4 <= optionsEnd {
            let code = field16(at), size = Int(field16(at + 2))
            if code == 0 { break }
            let padded = (size + 3) & ~3
            guard at + 4 + padded <= optionsEnd else {
                throw malformed("interface description block option \(code) of \(size) bytes runs past the block")
            }
            let value = buffer.pointer + at + 4
            switch (code, size) {
            case (9, 1):
                interface.resolution = TimeResolution(option: value.load(as: UInt8.self))
            case (14, 8):
                var seconds = value.loadUnaligned(as: Int64.self)
                if swapped { seconds = seconds.byteSwapped }
                let (ns, o) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
                interface.offset = o ? nil : ns
            default: break
            }
            at += 4 + padded
        }
        interfaces.append(interface)
        if firstInterface == nil { firstInterface = interface }
        if namedDLTs.insert(interface.dlt).inserted {
            linkTypeNames.append(pcap_datalink_val_to_name(interface.dlt).map { String(cString: $0) } ?? "DLT_\(interface.dlt)")
        }
        buffer.consume(length)
    }

    /// Type 6: interface id, timestamp (high, low), captured length, original length, data.
    @inline(__always)
    private func enhancedPacket(_ length: Int) throws -> CapturedFrame {
        try whole(length, minimum: 32, "enhanced packet block")
        return try packet(length, interfaceID: field(8), high: field(12), low: field(16), captured: field(20),
                          original: field(24), dataAt: 28, "enhanced packet block")
    }

    /// Type 2 (obsolete, still written by old tools): 16-bit interface id, drops, then as type 6.
    private func obsoletePacket(_ length: Int) throws -> CapturedFrame {
        try whole(length, minimum: 32, "packet block")
        return try packet(length, interfaceID: UInt32(field16(8)), high: field(12), low: field(16), captured: field(20),
                          original: field(24), dataAt: 28, "packet block")
    }

    /// Type 3: original length and data, captured on interface 0 and cut to its snap length; no
    /// timestamp (Wireshark shows 0: the epoch).
    private func simplePacket(_ length: Int) throws -> CapturedFrame {
        try whole(length, minimum: 16, "simple packet block")
        guard let interface = interfaces.first else {
            throw malformed("simple packet block before any interface description block in its section")
        }
        let original = field(8)
        var captured = min(original, UInt32(length - 16))
        if interface.snapLength != 0 { captured = min(captured, interface.snapLength) }
        let data = UnsafeRawBufferPointer(start: buffer.pointer + 12, count: Int(captured))
        guard let t = interface.offset, CapturedFrame.timestampRange.contains(t) else {
            throw malformed("time stamp offset of interface 0 puts its frames outside the years 1823 to 2116")
        }
        buffer.consume(length)
        frames &+= 1
        return CapturedFrame(bytes: data, timestamp: t, wireLength: Int(original), link: interface.link)
    }

    @inline(__always)
    private func packet(_ length: Int, interfaceID: UInt32, high: UInt32, low: UInt32, captured: UInt32, original: UInt32,
                        dataAt: Int, _ what: String) throws -> CapturedFrame {
        guard Int(interfaceID) < interfaces.count else {
            throw malformed("\(what) names interface \(interfaceID), but its section describes \(interfaces.count)")
        }
        guard Int(captured) <= length - dataAt - 4 else {
            throw malformed("\(what) captured length \(captured) runs past its block of \(length) bytes")
        }
        let interface = interfaces[Int(interfaceID)]
        let units = UInt64(high) << 32 | UInt64(low)
        guard let ns = interface.resolution.nanoseconds(units), let offset = interface.offset,
              case let (t, o) = ns.addingReportingOverflow(offset), !o, CapturedFrame.timestampRange.contains(t) else {
            throw CaptureError("\(path): frame \(frames + 1): time stamp \(units) \(interface.resolution.unitName) "
                + "with an offset of \(interface.offsetDescription) is outside the years 1823 to 2116 "
                + "(a corrupt time stamp, or a pcapng interface's time resolution or offset)")
        }
        let data = UnsafeRawBufferPointer(start: buffer.pointer + dataAt, count: Int(captured))
        buffer.consume(length)
        frames &+= 1
        return CapturedFrame(bytes: data, timestamp: t, wireLength: Int(original), link: interface.link)
    }

    /// The file ends (or a read fails) inside a block.
    private func cut(needing count: Int) -> CaptureError {
        if let failure = buffer.failure { return CaptureError("\(path): frame \(frames + 1): \(failure)") }
        return CaptureError("\(path): frame \(frames + 1): the file ends inside a block at byte \(buffer.offset) "
            + "(\(buffer.available) of its \(count) bytes present): cut short")
    }

    private func malformed(_ what: String) -> CaptureError {
        CaptureError("\(path): frame \(frames + 1): malformed pcapng: \(what), at byte \(buffer.offset)")
    }

    private func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

    /// libpcap's DLT for a LINKTYPE: the same number except where a DLT differs between systems
    /// (libpcap's `linktype_to_dlt`); LINKTYPE_RAW is Linux's DLT_RAW.
    static func dlt(linktype: UInt16) -> Int32 {
        linktype == 101 ? 12 : Int32(linktype)
    }
}

extension PcapngReader.Interface {
    var offsetDescription: String {
        guard let offset else { return "more than 2^63 ns" }
        return "\(offset / 1_000_000_000) s"
    }
}

extension PcapngReader.TimeResolution {
    var unitName: String {
        switch self {
        case .decimal(let n): return n == 6 ? "µs" : n == 9 ? "ns" : "units of 10^-\(n) s"
        case .binary(let n): return "units of 2^-\(n) s"
        }
    }
}
