import Captures
import Foundation
import Lab
import PacketParser
import Testing
import TestSupport

@Suite struct CaptureReaderTests {
    /// Frame counts and link types of the shared captures, as tshark reported them when they were
    /// stored (the `.tshark.json` beside each).
    @Test(arguments: [("cs_http_ip4and6.pcapng", "EN10MB", 20), ("evilfingers_nmap_syn_scan.pcap", "EN10MB", 2020),
                      ("sv_linux_sll_multi.pcap", "LINUX_SLL", 426), ("sv_ipv4_options_syn.pcap", "IPV4", 8)])
    func readsEveryFrameWithItsLinkType(_ name: String, _ link: String, _ frames: Int) throws {
        guard let path = TestEnvironment.capture(name) else { return TestEnvironment.unavailable("\(name) not found") }
        let r = try CaptureReader(path: path)
        #expect(r.linkTypeName == link)
        var n = 0
        var last: Int64 = 0
        while let f = try r.next() {
            n += 1
            #expect(f.bytes.count <= f.wireLength)
            #expect(f.timestamp >= 1_000_000_000 * 1_000_000_000 || f.timestamp > 0)
            last = f.timestamp
        }
        #expect(n == frames)
        #expect(last > 0)
    }

    @Test func nanosecondTimestampsSurvive() throws {
        let path = TestEnvironment.temporaryPath("ns.pcap")
        let w = try PcapWriter(path: path, link: .raw)
        let ts: Int64 = 1_700_000_000_123_456_789
        try w.write([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 2, 2, 198, 18, 2, 3], timestamp: ts)
        try w.close()
        let r = try CaptureReader(path: path)
        let f = try #require(try r.next())
        #expect(f.timestamp == ts)
        #expect(f.bytes.count == 20)
        #expect(try r.next() == nil)
    }

    @Test func unreadableFilesThrowOneLine() throws {
        #expect(throws: CaptureError.self) { try CaptureReader(path: "/nonexistent/x.pcap") }
        let garbage = TestEnvironment.temporaryPath("garbage.pcap")
        try Data(repeating: 0x41, count: 100).write(to: URL(fileURLWithPath: garbage))
        do {
            _ = try CaptureReader(path: garbage)
            Issue.record("garbage opened")
        } catch let e as CaptureError {
            #expect(!e.description.contains("\n"))
            #expect(e.description.contains(garbage))
        }
        // LINKTYPE_USER0 (147): a valid file ReflectGuard cannot parse.
        let user0 = TestEnvironment.temporaryPath("user0.pcap")
        try Data([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 147, 0, 0, 0])
            .write(to: URL(fileURLWithPath: user0))
        do {
            _ = try CaptureReader(path: user0)
            Issue.record("USER0 opened")
        } catch let e as CaptureError {
            #expect(e.description.contains("unsupported link type"))
        }
    }
}

/// Live capture inside a network namespace this test creates (lab addresses only, removed on exit).
@Suite(.serialized) struct LiveCaptureTests {
    static let ns = "rgt-scoring-live-\(getpid())"

    static func canUseNetns() -> Bool {
        getuid() == 0 && (FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            || FileManager.default.isExecutableFile(atPath: "/sbin/ip"))
    }

    static var ip: String { FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip" }

    /// A namespace with 198.18.2.2/24 on its loopback; nothing listens, so a connect is refused.
    static func withNamespace(_ body: () throws -> Void) throws {
        try TestEnvironment.run(ip, ["netns", "add", ns])
        defer { _ = try? TestEnvironment.run(ip, ["netns", "delete", ns]) }
        let up = try TestEnvironment.run(ip, ["-n", ns, "link", "set", "lo", "up"])
        #expect(up.status == 0, "\(up.err)")
        let addr = try TestEnvironment.run(ip, ["-n", ns, "addr", "add", "198.18.2.2/24", "dev", "lo"])
        #expect(addr.status == 0, "\(addr.err)")
        try body()
    }

    @Test func scoreInterfaceSeesARefusedConnection() throws {
        guard Self.canUseNetns() else { return TestEnvironment.unavailable("live capture needs root and iproute2") }
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        try Self.withNamespace {
            let json = TestEnvironment.temporaryPath("live.json")
            let score = Process()
            score.executableURL = URL(fileURLWithPath: Self.ip)
            // 5 s: room for the three connects after the capture is live, on a loaded machine too.
            score.arguments = ["netns", "exec", Self.ns, bin, "score", "--interface", "lo", "--duration", "5",
                               "--protect", "198.18.2.0/24", "--format", "json", "--output", json]
            let err = Pipe()
            score.standardError = err
            try score.run()
            // Connects only once the capture is live, not after a fixed sleep (which start-up on a
            // loaded machine can outlast): libpcap maps its packet ring (a `socket:[…]` line in the
            // process's maps; `ip netns exec` execs, so the pid is score's) after binding to lo.
            let live = Date().addingTimeInterval(20)
            while score.isRunning && Date() < live
                && !((try? String(contentsOfFile: "/proc/\(score.processIdentifier)/maps", encoding: .utf8)) ?? "").contains("socket:[") {
                Thread.sleep(forTimeInterval: 0.02)
            }
            if Date() >= live { Issue.record("score's capture on lo was not live within 20 s") }
            // Three refused connects: SYN, then RST|ACK from the kernel (nothing listens on 9).
            for _ in 0..<3 {
                try TestEnvironment.run(Self.ip, ["netns", "exec", Self.ns, "/bin/bash", "-c",
                                      "exec 3<>/dev/tcp/198.18.2.2/9 2>/dev/null; true"])
            }
            // Bounded: a capture that never returns must fail the test, not hang the suite.
            let deadline = Date().addingTimeInterval(20)
            while score.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
            if score.isRunning {
                kill(score.processIdentifier, SIGKILL)
                Issue.record("score --interface --duration 5 still running after 20 s")
            }
            score.waitUntilExit()
            let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(score.terminationStatus == 0, "\(e)")
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
            let packets = try #require(obj["packets"] as? [String: Int])
            #expect(packets["syn"] == 3)
            #expect(packets["rst"] == 3)
            let sessions = try #require(obj["sessions"] as? [String: Any])
            #expect((sessions["conn_states"] as? [String: Int])?["REJ"] == 3)
            #expect((sessions["end_reasons"] as? [String: Int])?["tcp-rst-from-server"] == 3)
        }
    }

    @Test func missingInterfaceIsOneLineExitOne() throws {
        guard let bin = TestEnvironment.binary else { return TestEnvironment.unavailable("reflectguard binary not built") }
        let r = try TestEnvironment.run(bin, ["score", "--interface", "rgt-no-such-if0", "--duration", "1"])
        #expect(r.status == 1)
        #expect(r.err.split(separator: "\n").count == 1, "\(r.err)")
    }
}

/// The direct reader against libpcap itself (`direct: false`): the same frames, bytes, timestamps
/// and wire lengths, and the same error at the same frame, for real captures and for files made
/// to have what the direct reader leaves to libpcap (a record longer than the snap length, a cut
/// record, a cut header) or reads itself in other ways (big-endian, nanosecond files).
@Suite struct DirectReaderTests {
    struct Read: Equatable {
        var frames: [[UInt8]] = []
        var times: [Int64] = []
        var wire: [Int] = []
        var error: String?
    }

    func read(_ path: String, direct: Bool) throws -> Read {
        let r = try CaptureReader(path: path, direct: direct)
        var out = Read()
        do {
            while let f = try r.next() {
                out.frames.append(Array(f.bytes))
                out.times.append(f.timestamp)
                out.wire.append(f.wireLength)
            }
        } catch let e as CaptureError {
            out.error = e.description
        }
        return out
    }

    /// A pcap file from parts: `bigEndian` writes every field swapped, `nano` the nanosecond magic.
    func pcap(_ records: [(caplen: UInt32, len: UInt32, data: [UInt8])], snap: UInt32 = 128, link: UInt32 = 101,
              bigEndian: Bool = false, nano: Bool = false, version: (UInt16, UInt16) = (2, 4),
              firstSecond: UInt32 = 1_700_000_000, firstFraction: UInt32 = 7) -> [UInt8] {
        func u32(_ v: UInt32) -> [UInt8] {
            let b = [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)]
            return bigEndian ? b.reversed() : b
        }
        func u16(_ v: UInt16) -> [UInt8] {
            let b = [UInt8(v & 0xff), UInt8(v >> 8)]
            return bigEndian ? b.reversed() : b
        }
        var out = u32(nano ? 0xa1b2_3c4d : 0xa1b2_c3d4) + u16(version.0) + u16(version.1) + u32(0) + u32(0)
            + u32(snap) + u32(link)
        for (i, r) in records.enumerated() {
            out += u32(firstSecond &+ UInt32(i)) + u32(firstFraction &+ UInt32(1000 * i)) + u32(r.caplen) + u32(r.len) + r.data
        }
        return out
    }

    /// An IPv4/TCP SYN of `size` bytes (raw IP link), with the frame number in the IP id.
    func frame(_ n: Int, size: Int = 60) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: size)
        f[0] = 0x45; f[2] = UInt8(size >> 8); f[3] = UInt8(size & 0xff); f[5] = UInt8(n); f[8] = 64; f[9] = 6
        f[12...15] = [198, 18, 2, 2]; f[16...19] = [198, 18, 2, 3]
        f[32] = 0x50; f[33] = 0x02
        return f
    }

    /// Reads a made file both ways; also says whether the direct reader was still in use at the end.
    func check(_ bytes: [UInt8], _ name: String) throws -> (Read, directToTheEnd: Bool) {
        let path = TestEnvironment.temporaryPath(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let a = try read(path, direct: true), b = try read(path, direct: false)
        #expect(a == b, "\(name): the direct reader and libpcap differ")
        let r = try CaptureReader(path: path)
        #expect(r.readsDirectly, "\(name): a plain pcap file is read directly")
        while (try? r.next()) != nil {}
        return (a, r.readsDirectly)
    }

    @Test func sharedCapturesReadTheSame() throws {
        var any = false
        for name in ["evilfingers_nmap_syn_scan.pcap", "sv_linux_sll_multi.pcap", "sv_ipv4_options_syn.pcap",
                     "cs_http_ip4and6.pcapng"] {
            guard let path = TestEnvironment.capture(name) else { continue }
            any = true
            let a = try read(path, direct: true), b = try read(path, direct: false)
            #expect(a == b, "\(name)")
            #expect(!a.frames.isEmpty && a.error == nil)
            // Plain pcap by the direct reader, pcapng by ours: libpcap's per-frame work avoided.
            #expect(try CaptureReader(path: path).readsDirectly, "\(name)")
        }
        if !any { TestEnvironment.unavailable("shared captures not found") }
    }

    @Test func byteOrderAndPrecisionVariants() throws {
        let records = (1...5).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0)) }
        for (be, nano) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a, direct) = try check(pcap(records, bigEndian: be, nano: nano), "variant-\(be)-\(nano).pcap")
            #expect(a.frames.count == 5 && a.error == nil && direct)
            #expect(a.times[1] == 1_700_000_001 * 1_000_000_000 + 1007 * (nano ? 1 : 1000))
        }
    }

    /// Snapped records (caplen < len) are ordinary; a record longer than the snap length is
    /// libpcap's to judge, and it takes over at that frame with the earlier ones not repeated.
    @Test func libpcapTakesOverAtAnUnusualRecord() throws {
        var records = (1...6).map { (caplen: UInt32(60), len: UInt32(1500), data: frame($0)) }
        records[3] = (caplen: 200, len: 200, data: frame(4, size: 200))
        let (a, direct) = try check(pcap(records, snap: 128), "oversized.pcap")
        #expect(!direct, "libpcap took over")
        #expect(a.frames.count >= 3)
        #expect(a.frames.prefix(3).map { $0[5] } == [1, 2, 3])
        #expect(a.wire.first == 1500)
    }

    @Test func cutFilesFailAtTheSameFrame() throws {
        let records = (1...4).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0)) }
        let whole = pcap(records)
        // Cut inside the last record's data, then inside its header.
        let (inData, _) = try check(Array(whole.dropLast(10)), "cut-data.pcap")
        #expect(inData.frames.count == 3 && inData.error != nil)
        let (inHeader, _) = try check(Array(whole.dropLast(60 + 8)), "cut-header.pcap")
        #expect(inHeader.frames.count == 3 && inHeader.error != nil)
        // A header and no records at all.
        let (empty, direct) = try check(Array(whole.prefix(24)), "empty.pcap")
        #expect(empty.frames.isEmpty && empty.error == nil && direct)
    }

    /// What libpcap reads its own way stays libpcap's: older versions (it swaps caplen and len in
    /// some), and times past 2038 (it reads them as signed 32-bit seconds) come out the same
    /// whichever reader takes them, also when libpcap takes over in the middle of a file.
    @Test func olderVersionsAndSignedTimesReadAsLibpcapReadsThem() throws {
        // Version 2.2, snapped records whose caplen < len: libpcap's to read.
        let snapped = (1...50).map { (caplen: UInt32(54), len: UInt32(600), data: frame($0, size: 54)) }
        let old = TestEnvironment.temporaryPath("v22.pcap")
        try Data(pcap(snapped, snap: 65535, version: (2, 2))).write(to: URL(fileURLWithPath: old))
        #expect(try !CaptureReader(path: old).readsDirectly)
        #expect(try read(old, direct: true) == read(old, direct: false))
        // Seconds past 2^31, then an oversized record, so libpcap takes over at frame 4.
        var records = (1...6).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0)) }
        records[3] = (caplen: 200, len: 200, data: frame(4, size: 200))
        let (a, direct) = try check(pcap(records, firstSecond: 0x9000_0000), "signed-times.pcap")
        #expect(!direct)
        #expect(a.times.allSatisfy { $0 < 0 }, "signed, as libpcap reads them: \(a.times)")
    }

    /// libpcap 1.10 reads a byte-swapped file's seconds and fraction as unsigned 32-bit numbers
    /// and a native file's as signed (found by the file-reader fuzzer): both readers agree in
    /// either byte order and precision, with seconds past 2^31 and a fraction past 2^31.
    @Test func swappedTimesReadAsLibpcapReadsThem() throws {
        let records = (1...3).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0)) }
        for (be, nano) in [(false, false), (true, false), (false, true), (true, true)] {
            let bytes = pcap(records, bigEndian: be, nano: nano, firstSecond: 0x9000_0000, firstFraction: 0xffff_ff00)
            let (a, direct) = try check(bytes, "high-times-\(be)-\(nano).pcap")
            #expect(direct && a.frames.count == 3)
            #expect(a.times.allSatisfy { be ? $0 > 0 : $0 < 0 }, "\(be) \(nano): \(a.times)")
        }
    }

    /// A FIFO (or a pipe as /dev/stdin) is libpcap's alone: a second open would take bytes from
    /// its stream.
    @Test func aFifoIsReadByLibpcapAlone() throws {
        let records = (0..<3000).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0 & 0xff)) }
        let file = TestEnvironment.temporaryPath("fifo-source.pcap")
        try Data(pcap(records)).write(to: URL(fileURLWithPath: file))
        let fifo = TestEnvironment.temporaryPath("capture.fifo")
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        writer.arguments = ["-c", "cat '\(file)' > '\(fifo)'"]
        try writer.run()
        defer { writer.waitUntilExit() }
        let r = try CaptureReader(path: fifo)
        #expect(!r.readsDirectly)
        var n = 0
        while try r.next() != nil { n += 1 }
        #expect(n == 3000)
    }

    /// Records across the reader's 4 MiB blocks come out whole and in order (frames of varying
    /// size, so boundaries fall inside headers and inside data).
    @Test func recordsAcrossBlockBoundaries() throws {
        let records = (0..<120_000).map { i -> (caplen: UInt32, len: UInt32, data: [UInt8]) in
            let size = 40 + (i * 7) % 88
            return (caplen: UInt32(size), len: UInt32(size), data: frame(i & 0xff, size: size))
        }
        let (a, direct) = try check(pcap(records), "blocks.pcap")
        #expect(a.frames.count == 120_000 && a.error == nil && direct)
    }

    /// A capture truncated while it is read (tcpdump's -W ring buffer truncates its files as it
    /// wraps): the reader stops at the new end or reports an error, and never crashes (a memory
    /// map would have died with SIGBUS here).
    @Test func aFileTruncatedWhileReadEndsWithoutACrash() throws {
        let records = (0..<200_000).map { (caplen: UInt32(60), len: UInt32(60), data: frame($0 & 0xff)) }
        let path = TestEnvironment.temporaryPath("truncated-while-read.pcap")
        try Data(pcap(records)).write(to: URL(fileURLWithPath: path))
        let r = try CaptureReader(path: path)
        for _ in 0..<1000 { _ = try #require(try r.next()) }
        #expect(truncate(path, 1_000_000) == 0)
        var more = 0
        do { while try r.next() != nil { more += 1 } } catch is CaptureError {}
        #expect(1000 + more < 200_000, "the frames past the new end are gone: \(1000 + more)")
    }
}
