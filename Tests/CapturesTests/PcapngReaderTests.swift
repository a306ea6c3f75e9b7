import Captures
import Foundation
import Lab
import PacketParser
import Testing
import TestSupport

/// The pcapng reader on files built block by block: several sections in both byte orders,
/// interfaces of different link types, snap lengths, resolutions and offsets, every packet block
/// type and the blocks it must skip; and one malformed or cut block of each type, which must end
/// the capture with one error naming the frame, after the frames before it.
@Suite struct PcapngReaderTests {
    /// A TCP SYN from 198.18.2.10 to 203.0.113.5, sport `n`: Ethernet, or raw IP.
    static func syn(_ n: UInt16, link: LinkType = .ethernet) -> [UInt8] {
        let spec = FrameSpec(source: IPAddress(v4: 198, 18, 2, 10), destination: IPAddress(v4: 203, 0, 113, 5),
                             sourcePort: 40000 &+ n, destinationPort: 443)
        var out: [UInt8] = []
        let n = FrameBuilder.build(spec, link: link, into: &out)
        return Array(out[0..<n])
    }

    /// Linux cooked v1 header (16 bytes) in front of a raw IPv4 packet.
    static func sll(_ n: UInt16) -> [UInt8] {
        [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 1, 1, 0, 0, 0x08, 0x00] + syn(n, link: .raw)
    }

    static let t0: UInt64 = 1_700_000_000

    struct Read: Equatable {
        var frames: [[UInt8]] = []
        var times: [Int64] = []
        var wire: [Int] = []
        var links: [LinkType?] = []
        var error: String?
    }

    static func read(_ path: String, direct: Bool = true) throws -> Read {
        let r = try CaptureReader(path: path, direct: direct)
        var out = Read()
        do {
            while let f = try r.next() {
                out.frames.append(Array(f.bytes))
                out.times.append(f.timestamp)
                out.wire.append(f.wireLength)
                out.links.append(f.link)
            }
        } catch {
            out.error = "\(error)"
        }
        return out
    }

    /// Two sections, little-endian then big-endian: Ethernet (µs), SLL with a snap length (ns),
    /// raw IP (binary 2^-20 s, offset +10 s); every packet block type and skipped blocks between.
    static func mixedFile() -> (bytes: [UInt8], expected: Read) {
        var e = Read()
        var b = PcapngBuilder(bigEndian: false)
        b.section()
        b.otherBlocks()
        b.interface(linktype: 1, name: "eth0")
        b.interface(linktype: 113, snapLength: 60, resolution: 9, name: "any")
        b.interface(linktype: 101, resolution: 0x80 | 20, offset: 10)
        b.enhanced(interface: 0, units: t0 * 1_000_000 + 1, data: syn(1), comment: "first")
        e.frames.append(syn(1)); e.times.append(Int64(t0) * 1_000_000_000 + 1000); e.links.append(.ethernet)
        b.otherBlocks()
        b.enhanced(interface: 1, units: t0 * 1_000_000_000 + 7, data: sll(2), originalLength: 200)
        e.frames.append(sll(2)); e.times.append(Int64(t0) * 1_000_000_000 + 7); e.links.append(.linuxSLL)
        // 2^-20 s units: 3 << 19 units is 1.5 s, plus the 10 s offset.
        b.enhanced(interface: 2, units: 3 << 19, data: syn(3, link: .raw))
        e.frames.append(syn(3, link: .raw)); e.times.append(11_500_000_000); e.links.append(.raw)
        b.obsolete(interface: 1, units: t0 * 1_000_000_000 + 9, data: sll(4))
        e.frames.append(sll(4)); e.times.append(Int64(t0) * 1_000_000_000 + 9); e.links.append(.linuxSLL)
        b.simple(data: syn(5))
        e.frames.append(syn(5)); e.times.append(0); e.links.append(.ethernet)
        // A second section, big-endian: its interfaces start again from 0.
        var big = PcapngBuilder(bigEndian: true)
        big.section()
        big.interface(linktype: 113, snapLength: 40)
        big.otherBlocks()
        big.enhanced(interface: 0, units: (t0 + 1) * 1_000_000, data: sll(6))
        e.frames.append(sll(6)); e.times.append(Int64(t0 + 1) * 1_000_000_000); e.links.append(.linuxSLL)
        // A simple packet cut to interface 0's snap length of 40.
        big.simple(data: sll(7))
        e.frames.append(Array(sll(7).prefix(40))); e.times.append(0); e.links.append(.linuxSLL)
        e.wire = [syn(1).count, 200, syn(3, link: .raw).count, sll(4).count, syn(5).count, sll(6).count, sll(7).count]
        return (b.bytes + big.bytes, e)
    }

    @Test func readsSectionsInterfacesAndEveryPacketBlock() throws {
        let (bytes, expected) = Self.mixedFile()
        let path = TestEnvironment.temporaryPath("mixed.pcapng")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let got = try Self.read(path)
        #expect(got == expected)
        let r = try CaptureReader(path: path)
        #expect(r.linkType == .ethernet && r.linkTypeName == "EN10MB" && r.readsDirectly)
        while try r.next() != nil {}
        #expect(r.linkTypeNames == ["EN10MB", "LINUX_SLL", "RAW"])
        // libpcap refuses this file (interfaces of several link types) at its second interface:
        // what the reader is for.
        let libpcap = try? Self.read(path, direct: false)
        #expect(libpcap == nil || (libpcap!.error != nil && libpcap!.frames.count < expected.frames.count))
    }

    /// Where libpcap reads a pcapng file (one link type), the two readers agree frame for frame.
    @Test func agreesWithLibpcapOnSingleLinkFiles() throws {
        var paths: [String] = []
        for bigEndian in [false, true] {
            var b = PcapngBuilder(bigEndian: bigEndian)
            b.section()
            b.interface(linktype: 1, resolution: 9)
            b.otherBlocks()
            b.interface(linktype: 1)
            for i in 0..<50 {
                b.enhanced(interface: UInt32(i % 2), units: i % 2 == 0 ? Self.t0 * 1_000_000_000 + UInt64(i) : Self.t0 * 1_000_000 + UInt64(i),
                           data: Self.syn(UInt16(i)))
            }
            let path = TestEnvironment.temporaryPath("single-\(bigEndian).pcapng")
            try b.write(to: path)
            paths.append(path)
        }
        if let shared = TestEnvironment.capture("cs_http_ip4and6.pcapng") { paths.append(shared) }
        for path in paths {
            let ours = try Self.read(path), theirs = try Self.read(path, direct: false)
            #expect(ours.frames == theirs.frames && ours.times == theirs.times && ours.wire == theirs.wire, "\(path)")
            #expect(ours.error == nil && !ours.frames.isEmpty)
        }
    }

    struct Broken: CustomTestStringConvertible, Sendable {
        let name: String
        /// Frames readable before the broken block.
        let before: Int
        let bytes: [UInt8]
        /// Words the error must contain.
        let says: String
        var testDescription: String { name }
    }

    /// A good start (section, interface, two frames), then one broken block of each type.
    static var broken: [Broken] {
        var good = PcapngBuilder()
        good.section()
        good.interface(linktype: 1)
        good.enhanced(interface: 0, units: t0 * 1_000_000, data: syn(1))
        good.enhanced(interface: 0, units: t0 * 1_000_000 + 1, data: syn(2))
        let b = good
        let start = good.bytes
        func with(_ tail: [UInt8]) -> [UInt8] { start + tail }
        let epb = { (id: UInt32) -> [UInt8] in
            var x = PcapngBuilder(); x.enhanced(interface: id, units: 0, data: syn(3)); return x.bytes
        }
        var cases: [Broken] = []
        // Section header: a byte-order magic that is neither order; a version 2; cut in the middle;
        // a trailing length that differs.
        var shb = PcapngBuilder(); shb.section()
        var badMagic = shb.bytes; badMagic[8] = 0x11
        cases.append(Broken(name: "section header, bad byte-order magic", before: 2, bytes: with(badMagic), says: "byte-order magic"))
        var v2 = shb.bytes; v2[12] = 2
        cases.append(Broken(name: "section header, version 2", before: 2, bytes: with(v2), says: "version 2"))
        cases.append(Broken(name: "section header, cut", before: 2, bytes: with(Array(shb.bytes.prefix(20))), says: "cut short"))
        var shbTrailer = shb.bytes; shbTrailer[shbTrailer.count - 4] ^= 0x04
        cases.append(Broken(name: "section header, trailing length differs", before: 2, bytes: with(shbTrailer), says: "trailing copy"))
        // Interface description: an option running past the block; cut; trailing length.
        var idbOption = b.u16(1) + b.u16(0) + b.u32(0) + b.u16(9) + b.u16(200)
        idbOption += [UInt8](repeating: 0, count: 4)
        cases.append(Broken(name: "interface description, option past the block", before: 2,
                            bytes: with(b.block(1, idbOption)), says: "runs past the block"))
        var idb = PcapngBuilder(); idb.interface(linktype: 113)
        cases.append(Broken(name: "interface description, cut", before: 2, bytes: with(Array(idb.bytes.prefix(14))), says: "cut short"))
        var idbTrailer = idb.bytes; idbTrailer[idbTrailer.count - 4] = 0x80
        cases.append(Broken(name: "interface description, trailing length differs", before: 2, bytes: with(idbTrailer),
                            says: "trailing copy"))
        // Enhanced packet: an interface never described; a captured length past the block; a
        // length that is not a multiple of 4; a huge length (no allocation, one error); cut.
        cases.append(Broken(name: "enhanced packet, unknown interface", before: 2, bytes: with(epb(7)), says: "names interface 7"))
        var pastBlock = epb(0); pastBlock[20] = 0xff
        cases.append(Broken(name: "enhanced packet, captured length past its block", before: 2, bytes: with(pastBlock),
                            says: "runs past its block"))
        var odd = epb(0); odd[4] = odd[4] &+ 2
        cases.append(Broken(name: "enhanced packet, length not a multiple of 4", before: 2, bytes: with(odd), says: "multiple of 4"))
        var huge = epb(0); huge[4] = 0xf0; huge[5] = 0xff; huge[6] = 0xff; huge[7] = 0xff
        cases.append(Broken(name: "enhanced packet, length of 4 GiB", before: 2, bytes: with(huge), says: "larger than the reader"))
        cases.append(Broken(name: "enhanced packet, cut", before: 2, bytes: with(Array(epb(0).dropLast(9))), says: "cut short"))
        // Simple packet: before any interface of its section; cut.
        var spb = PcapngBuilder(); spb.simple(data: syn(4))
        cases.append(Broken(name: "simple packet, no interface in its section", before: 2, bytes: with(shb.bytes + spb.bytes),
                            says: "before any interface"))
        cases.append(Broken(name: "simple packet, cut", before: 2, bytes: with(Array(spb.bytes.dropLast(3))), says: "cut short"))
        var spbShort = spb.bytes; spbShort[4] = 12; spbShort[spbShort.count - 4] = 12
        cases.append(Broken(name: "simple packet, shorter than its header", before: 2, bytes: with(Array(spbShort.prefix(8)) + [0, 0, 0, 0]),
                            says: "at least 16"))
        // Obsolete packet block: an interface never described; cut.
        var pb = PcapngBuilder(); pb.obsolete(interface: 3, units: 0, data: syn(5))
        cases.append(Broken(name: "packet block, unknown interface", before: 2, bytes: with(pb.bytes), says: "names interface 3"))
        cases.append(Broken(name: "packet block, cut", before: 2, bytes: with(Array(pb.bytes.prefix(30))), says: "cut short"))
        // A skipped block (name resolution) whose length runs past the end of the file.
        var nrb = PcapngBuilder(); nrb.otherBlocks()
        var nrbLong = Array(nrb.bytes.prefix(28)); nrbLong[4] = 0; nrbLong[5] = 0; nrbLong[6] = 1
        cases.append(Broken(name: "name resolution block past the end", before: 2, bytes: with(nrbLong), says: "cut short"))
        var zero = Array(nrb.bytes.prefix(12)); zero[4] = 4; zero[5] = 0
        cases.append(Broken(name: "a block of length 4", before: 2, bytes: with(zero), says: "at least 12"))
        // A few bytes past the last block: cut inside a block header.
        cases.append(Broken(name: "three stray bytes at the end", before: 2, bytes: with([1, 2, 3]), says: "cut short"))
        return cases
    }

    @Test(arguments: broken)
    func aMalformedBlockEndsTheCaptureNamingTheFrame(_ c: Broken) throws {
        let path = TestEnvironment.temporaryPath("broken-\(c.name.replacingOccurrences(of: " ", with: "-")).pcapng")
        try Data(c.bytes).write(to: URL(fileURLWithPath: path))
        let got = try Self.read(path)
        #expect(got.frames.count == c.before, "\(c.name): \(got.frames.count) frames")
        let error = try #require(got.error, "\(c.name): no error")
        #expect(error.contains("frame \(c.before + 1)"), "\(c.name): \(error)")
        #expect(error.contains(c.says), "\(c.name): \(error)")
        #expect(error.hasPrefix(path + ": ") && !error.contains("\n"), "\(error)")
        // The command line: exit 0, one warning naming the frame, the frames before it reported.
        guard let bin = TestEnvironment.binary else { return }
        let r = try TestEnvironment.run(bin, ["score", path, "--format", "json"])
        #expect(r.status == 0 && r.err.hasPrefix("Warning: \(path): frame \(c.before + 1)"), "\(c.name): \(r.err)")
        #expect(r.err.contains("reporting the \(c.before) frames before it"), "\(c.name): \(r.err)")
        #expect(r.out.contains("\"frames\": \(c.before)"), "\(c.name)")
    }

    /// No interface at all, or a first interface of a link type we cannot parse: refused at open.
    @Test func unusableFilesAreRefusedAtOpen() throws {
        var none = PcapngBuilder()
        none.section()
        none.otherBlocks()
        let a = TestEnvironment.temporaryPath("no-interface.pcapng")
        try none.write(to: a)
        let e1 = #expect(throws: CaptureError.self) { try CaptureReader(path: a) }
        #expect(e1?.description.contains("describes no interface") == true)
        var user = PcapngBuilder()
        user.section()
        user.interface(linktype: 147)
        user.enhanced(interface: 0, units: 0, data: [1, 2, 3])
        let b = TestEnvironment.temporaryPath("user0.pcapng")
        try user.write(to: b)
        let e2 = #expect(throws: CaptureError.self) { try CaptureReader(path: b) }
        #expect(e2?.description.contains("unsupported link type") == true)
        // A later interface of such a type: its frames count, with no link type to parse.
        var later = PcapngBuilder()
        later.section()
        later.interface(linktype: 1)
        later.interface(linktype: 147)
        later.enhanced(interface: 1, units: 0, data: [1, 2, 3])
        later.enhanced(interface: 0, units: 0, data: Self.syn(1))
        let c = TestEnvironment.temporaryPath("later-user0.pcapng")
        try later.write(to: c)
        let got = try Self.read(c)
        #expect(got.links == [nil, .ethernet] && got.error == nil)
    }

    /// Times: nanosecond and microsecond interfaces, decimal and binary resolutions finer and
    /// coarser than a nanosecond, negative offsets.
    @Test(arguments: [
        (UInt8?.none, Int64?.none, UInt64(1_700_000_000_123_456), Int64(1_700_000_000_123_456_000)),
        (9, nil, 1_700_000_000_123_456_789, 1_700_000_000_123_456_789),
        (3, nil, 1_700_000_000_123, 1_700_000_000_123_000_000),
        (12, nil, 1_700_000_000_123_456_789, 1_700_000_000_123_456),
        (0x80 | 10, -100, 1024 * 5 + 512, 5_500_000_000 - 100_000_000_000),
        (0x80 | 32, nil, 1 << 32, 1_000_000_000),
        (0, 1_700_000_000, 2, 1_700_000_002_000_000_000),
    ] as [(UInt8?, Int64?, UInt64, Int64)])
    func timesFollowTheInterfaceResolutionAndOffset(_ resolution: UInt8?, _ offset: Int64?, _ units: UInt64, _ ns: Int64) throws {
        var b = PcapngBuilder(bigEndian: true)
        b.section()
        b.interface(linktype: 1, resolution: resolution, offset: offset)
        b.enhanced(interface: 0, units: units, data: Self.syn(1))
        let path = TestEnvironment.temporaryPath("time-\(resolution ?? 6)-\(offset ?? 0).pcapng")
        try b.write(to: path)
        let got = try Self.read(path)
        #expect(got.times == [ns], "resolution \(String(describing: resolution)), offset \(String(describing: offset))")
    }
}
