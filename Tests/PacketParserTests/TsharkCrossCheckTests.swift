import Captures
import Foundation
import Lab
import PacketParser
import Testing
import TestSupport

/// Generated captures, written with the Lab's `PcapWriter`, counted by tshark (reassembly off, as
/// the foundation issue says) and by ReflectGuard: every count must agree. Per-frame verdicts are
/// compared too, so a failure names the frame.
///
/// How tshark's output maps to docs/output.md's counts: `ipv4`/`ipv6` = the outermost of `ip`/`ipv6`
/// in `frame.protocols` and its `ip.src`/`ipv6.src` shown (the fixed header parsed); `tcp` = a
/// `tcp.flags` shown with `tcp` next after that IP layer (past IPv6 extension headers and AH),
/// which leaves out TCP quoted in ICMP errors; `malformed` = tshark reports a malformed or
/// snap-length-cut packet, or an error-level expert item.
///
/// Left out on purpose, because ReflectGuard differs from tshark there by design: an IPv6 chain of
/// more than `ScalarParser.maxExtensionHeaders` extension headers (tshark walks on; we stop and
/// call it malformed), and a TCP header cut between 14 and 20 bytes (tshark already shows the
/// flags; docs/output.md requires the whole fixed header, which the `tcp.urgent_pointer` rule above
/// mirrors).
@Suite struct TsharkCrossCheckTests {
    struct Case {
        var name: String
        var link: LinkType
        var snapLength: UInt32 = 262_144
        var frames: [[UInt8]]
        var pcapng = false
    }

    static let o = ["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
                    "-o", "tcp.desegment_tcp_streams:FALSE"]

    /// Network-layer payloads (IPv4 or IPv6 packets) that every link type carries.
    static var ipPackets: [[UInt8]] {
        let syn = Frame.tcp(options: Frame.linuxSYNOptions)
        let synack = Frame.tcp(sport: 443, dport: 40000, seq: 7, ack: 0x1000_0001, flags: 0x12,
                               options: [2, 4, 5, 0xb4, 1, 1, 4, 2])
        let ack = Frame.tcp(seq: 0x1000_0001, ack: 8, flags: 0x10, options: Frame.timestampOptions)
        let rst = Frame.tcp(sport: 443, dport: 40000, seq: 8, flags: 0x04, window: 0)
        let finack = Frame.tcp(seq: 0x1000_0001, ack: 8, flags: 0x11)
        let data = Frame.tcp(seq: 0x1000_0001, ack: 8, flags: 0x18, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8))
        let tfo = Frame.tcp(flags: 0x02, options: [2, 4, 5, 0xb4, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8], payload: [1, 2, 3, 4, 5])
        return [
            Frame.ipv4(syn), Frame.ipv4(synack, src: Frame.v4b, dst: Frame.v4a), Frame.ipv4(ack),
            Frame.ipv4(rst, src: Frame.v4b, dst: Frame.v4a), Frame.ipv4(finack), Frame.ipv4(data), Frame.ipv4(tfo),
            Frame.ipv6(syn), Frame.ipv6(synack, src: Frame.v6b, dst: Frame.v6a), Frame.ipv6(rst), Frame.ipv6(finack),
            Frame.ipv4(Frame.udp(), proto: 17), Frame.ipv6(Frame.udp(), proto: 17),
        ]
    }

    static var ethernetFrames: [[UInt8]] {
        let syn = Frame.tcp(options: Frame.linuxSYNOptions)
        let rst = Frame.tcp(sport: 443, dport: 40000, seq: 8, flags: 0x04, window: 0)
        let synack = Frame.tcp(sport: 443, dport: 40000, seq: 7, ack: 0x1000_0001, flags: 0x12)
        var frames = ipPackets.map { Frame.eth($0, type: $0[0] >> 4 == 4 ? 0x0800 : 0x86dd) }
        frames += [
            // VLAN and QinQ
            Frame.eth(Frame.ipv4(syn), tags: [(0x8100, 100)]),
            Frame.eth(Frame.ipv6(synack), type: 0x86dd, tags: [(0x88a8, 10), (0x8100, 20)]),
            Frame.eth(Frame.ipv4(rst), tags: [(0x9100, 10), (0x8100, 20)]),
            // IPv4 options: record route (7 bytes, 1 slot) + NOP; and router alert + timestamp
            Frame.eth(Frame.ipv4(syn, options: [7, 7, 4, 0, 0, 0, 0, 1])),
            Frame.eth(Frame.ipv4(rst, options: [148, 4, 0, 0, 68, 12, 5, 0, 0, 0, 0, 0])),
            // fragments: first with whole TCP, first with 8 bytes of TCP, a later one
            Frame.eth(Frame.ipv4(syn + [UInt8](repeating: 0, count: 16), flagsFragment: 0x2000, totalLength: 20 + 56)),
            Frame.eth(Frame.ipv4(Array(syn[0..<8]), flagsFragment: 0x2000)),
            Frame.eth(Frame.ipv4(Array(syn[0..<24]), flagsFragment: 185)),
            // AH and ESP after IPv4
            Frame.eth(Frame.ipv4(Frame.ah(next: 6) + syn, proto: 51)),
            Frame.eth(Frame.ipv4(Frame.esp, proto: 50)),
            // inconsistent IPv4 / TCP headers
            Frame.eth(Frame.ipv4(syn, ihl: 4)),
            Frame.eth(Frame.ipv6(syn)),   // EtherType IPv4, version 6
            Frame.eth(Frame.ipv4(syn, totalLength: 16)),
            Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, dataOffset: 3))),
            Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, dataOffset: 15))),
            Frame.eth(Frame.ipv4(syn, totalLength: 30)),
            Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, options: [2, 8, 5, 0xb4]))),
            Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, options: [2, 0, 5, 0xb4]))),
            Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x02, options: [1, 1, 1, 2]))),
            // IPv6 extension headers
            Frame.eth(Frame.ipv6(syn, extensions: [Frame.ext(0)]), type: 0x86dd),
            Frame.eth(Frame.ipv6(syn, extensions: [Frame.ext(0), Frame.ext(60, units: 1), Frame.ext(43)]), type: 0x86dd),
            Frame.eth(Frame.ipv6(synack, extensions: [Frame.fragment()]), type: 0x86dd),
            Frame.eth(Frame.ipv6(syn, extensions: [Frame.fragment(more: true)]), type: 0x86dd),
            Frame.eth(Frame.ipv6(Array(syn[0..<24]), extensions: [Frame.fragment(offset: 100)]), type: 0x86dd),
            Frame.eth(Frame.ipv6(rst, extensions: [Frame.ah()]), type: 0x86dd),
            Frame.eth(Frame.ipv6(Frame.esp, proto: 50, extensions: [Frame.ext(60)]), type: 0x86dd),
            Frame.eth(Frame.ipv6([], proto: 59), type: 0x86dd),
            Frame.eth(Frame.ipv6([128, 0, 0, 0, 0, 1, 0, 1], proto: 58), type: 0x86dd),
            // not IP: ARP; and an ICMP error quoting a whole TCP header (must not count as TCP)
            Frame.eth([0, 1, 8, 0, 6, 4, 0, 1] + [UInt8](repeating: 0, count: 20), type: 0x0806),
            Frame.eth(Frame.ipv4([3, 3, 0, 0, 0, 0, 0, 0] + Frame.ipv4(rst), proto: 1)),
        ]
        return frames
    }

    static var cases: [Case] {
        let syn = Frame.tcp(options: Frame.linuxSYNOptions)
        let ip = ipPackets
        return [
            Case(name: "ethernet", link: .ethernet, frames: ethernetFrames),
            Case(name: "ethernet-pcapng", link: .ethernet, frames: ethernetFrames, pcapng: true),
            // 64 bytes: cuts a SYN's options, or the fixed TCP header after IP options / IPv6.
            Case(name: "snaplen", link: .ethernet, snapLength: 64, frames: [
                Frame.eth(Frame.ipv4(syn)),
                Frame.eth(Frame.ipv4(Frame.tcp(flags: 0x10))),
                Frame.eth(Frame.ipv4(syn, options: [UInt8](repeating: 1, count: 20))),
                Frame.eth(Frame.ipv6(Frame.tcp(flags: 0x02)), type: 0x86dd),
                Frame.eth(Frame.ipv4(syn, options: [UInt8](repeating: 1, count: 12))),
                // IPv4 options cut (addresses there: still IPv4), an IPv6 extension header cut
                Frame.eth(Frame.ipv4(syn, options: [UInt8](repeating: 1, count: 40))),
                Frame.eth(Frame.ipv6(syn, extensions: [Frame.ext(0, units: 2)]), type: 0x86dd),
            ]),
            Case(name: "sll", link: .linuxSLL,
                 frames: ip.map { Frame.sll($0, type: $0[0] >> 4 == 4 ? 0x0800 : 0x86dd) }
                     + [Frame.sll([0, 1, 8, 0, 6, 4, 0, 2] + [UInt8](repeating: 0, count: 20), type: 0x0806)]),
            Case(name: "sll2", link: .linuxSLL2,
                 frames: ip.map { Frame.sll2($0, type: $0[0] >> 4 == 4 ? 0x0800 : 0x86dd) }),
            Case(name: "raw", link: .raw, frames: ip),
            Case(name: "null", link: .null,
                 frames: ip.enumerated().map { i, p in
                     Frame.null(p, family: p[0] >> 4 == 4 ? 2 : [24, 28, 30][i % 3], bigEndian: i % 2 == 1)
                 }),
            Case(name: "loop", link: .loop,
                 frames: ip.map { Frame.null($0, family: $0[0] >> 4 == 4 ? 2 : 24, bigEndian: true) }),
        ]
    }

    @Test func countsEqualTsharkOnGeneratedCaptures() throws {
        guard let tshark = TestEnvironment.which("tshark") else {
            TestEnvironment.unavailable("tshark is not installed")
            return
        }
        let editcap = TestEnvironment.which("editcap")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rg-parser-tshark-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // REFLECTGUARD_KEEP_TMP=1 keeps the generated captures for a look with Wireshark.
        let keep = ProcessInfo.processInfo.environment["REFLECTGUARD_KEEP_TMP"] != nil
        defer { if keep { print("generated captures kept in \(dir.path)") } else { try? FileManager.default.removeItem(at: dir) } }

        for c in Self.cases {
            var path = dir.appendingPathComponent("\(c.name).pcap").path
            let writer = try PcapWriter(path: path, link: c.link, snapLength: c.snapLength)
            for (i, f) in c.frames.enumerated() {
                try writer.write(f, timestamp: 1_700_000_000_000_000_000 + Int64(i) * 1000)
            }
            try writer.close()
            if c.pcapng {
                guard let editcap else { TestEnvironment.unavailable("editcap is not installed"); continue }
                let ng = dir.appendingPathComponent("\(c.name).pcapng").path
                let (status, _) = try run(editcap, ["-F", "pcapng", path, ng])
                try #require(status == 0, "editcap failed on \(path)")
                path = ng
            }
            let theirs = try tsharkVerdicts(tshark, path)
            let ours = try reflectGuardVerdicts(path)
            try #require(theirs.count == c.frames.count, "\(c.name): tshark read \(theirs.count) frames")
            for (i, (t, r)) in zip(theirs, ours).enumerated() where t != r {
                Issue.record("\(c.name) frame \(i + 1): tshark \(t.counts.fields), ours \(r.counts.fields) (\(r.reason))")
            }
            let tc = theirs.reduce(into: PacketCounts()) { $0.merge($1.counts) }
            let rc = ours.reduce(into: PacketCounts()) { $0.merge($1.counts) }
            #expect(tc == rc, "\(c.name): tshark \(tc.fields) ours \(rc.fields)")
            #expect(rc.frames == c.frames.count)
        }
    }

    /// pcapng files as mergecap and editcap make them, from captures of different link types
    /// (Ethernet, Linux cooked, raw IP) and snap lengths, interleaved by time: with nanosecond
    /// interfaces, with microsecond ones, with both, and the same frames re-encoded big-endian in
    /// two sections. libpcap refuses all of them; tshark's counts and times must equal ours.
    @Test func countsEqualTsharkOnMergedPcapng() throws {
        guard let tshark = TestEnvironment.which("tshark"), let mergecap = TestEnvironment.which("mergecap"),
              let editcap = TestEnvironment.which("editcap") else {
            TestEnvironment.unavailable("tshark, mergecap or editcap is not installed")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rg-pcapng-tshark-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var nano: [String] = [], micro: [String] = []
        for c in Self.cases where ["ethernet", "snaplen", "sll", "raw"].contains(c.name) {
            let path = dir.appendingPathComponent("\(c.name).pcap").path
            let writer = try PcapWriter(path: path, link: c.link, snapLength: c.snapLength)
            for (i, f) in c.frames.enumerated() {
                // Times interleave the inputs, with nanoseconds a microsecond file cannot hold.
                try writer.write(f, timestamp: 1_700_000_000_000_000_000 + Int64(i) * 1_000_003 + Int64(c.link.linktype))
            }
            try writer.close()
            let us = dir.appendingPathComponent("\(c.name)-us.pcap").path
            try #require(try run(editcap, ["-F", "pcap", path, us]).0 == 0)
            nano.append(path)
            micro.append(us)
        }
        var files: [String: [String]] = ["merged-ns": nano, "merged-us": micro, "merged-mixed": [nano[0], micro[1], nano[2], micro[3]]]
        for (name, inputs) in files.sorted(by: { $0.key < $1.key }) {
            let out = dir.appendingPathComponent("\(name).pcapng").path
            try #require(try run(mergecap, ["-F", "pcapng", "-w", out] + inputs).0 == 0, "mergecap \(name)")
            files[name] = [out]
        }
        // Big-endian, two sections: the merged frames re-encoded, the second half in a section of
        // its own whose interfaces come in the other order.
        let merged = files["merged-mixed"]![0]
        let reader = try CaptureReader(path: merged)
        var frames: [(data: [UInt8], time: Int64, wire: Int, link: LinkType)] = []
        while let f = try reader.next() { frames.append((Array(f.bytes), f.timestamp, f.wireLength, try #require(f.link))) }
        let links: [LinkType] = [.ethernet, .linuxSLL, .raw]
        var big = PcapngBuilder(bigEndian: true)
        for (section, part) in [frames.prefix(frames.count / 2), frames.suffix(from: frames.count / 2)].enumerated() {
            big.section()
            let order = section == 0 ? links : links.reversed()
            for l in order { big.interface(linktype: UInt16(l.linktype), resolution: section == 0 ? 9 : 6) }
            for f in part {
                let id = UInt32(order.firstIndex(of: f.link)!)
                let units = section == 0 ? UInt64(f.time) : UInt64(f.time / 1000)
                big.enhanced(interface: id, units: units, data: f.data, originalLength: f.wire)
            }
        }
        let bigPath = dir.appendingPathComponent("big-endian.pcapng").path
        try big.write(to: bigPath)
        files["big-endian"] = [bigPath]

        for (name, paths) in files.sorted(by: { $0.key < $1.key }) {
            let path = paths[0]
            // libpcap refuses every one of them, at open or at the first interface of another type.
            #expect(throws: (any Error).self, "libpcap refuses \(name)") {
                let libpcap = try CaptureReader(path: path, direct: false)
                while try libpcap.next() != nil {}
            }
            let theirs = try tsharkVerdicts(tshark, path)
            let ours = try reflectGuardVerdicts(path)
            try #require(theirs.count == ours.count && theirs.count > 40, "\(name): tshark \(theirs.count), ours \(ours.count)")
            for (i, (t, r)) in zip(theirs, ours).enumerated() where t != r {
                Issue.record("\(name) frame \(i + 1): tshark \(t.counts.fields), ours \(r.counts.fields) (\(r.reason))")
            }
            // Times to the nanosecond (tshark prints frame.time_epoch with nine decimals).
            let (_, text) = try run(tshark, ["-r", path, "-T", "fields", "-e", "frame.time_epoch"])
            let tsharkTimes = text.split(separator: "\n").map { line -> Int64 in
                let parts = line.split(separator: ".")
                let fraction = String((parts.count > 1 ? String(parts[1]) : "").padding(toLength: 9, withPad: "0", startingAt: 0))
                return Int64(parts[0])! * 1_000_000_000 + Int64(fraction)!
            }
            let r = try CaptureReader(path: path)
            var ourTimes: [Int64] = []
            while let f = try r.next() { ourTimes.append(f.timestamp) }
            #expect(ourTimes == tsharkTimes, "\(name): times differ")
        }
    }

    struct FrameVerdict: Equatable {
        var counts: PacketCounts
        var reason = ""
        static func == (a: Self, b: Self) -> Bool { a.counts == b.counts }
    }

    func reflectGuardVerdicts(_ path: String) throws -> [FrameVerdict] {
        let reader = try CaptureReader(path: path)
        var out: [FrameVerdict] = []
        var p = ParsedPacket()
        while let f = try reader.next() {
            // Each frame with its interface's link type (a merged pcapng file has several).
            PacketParser.parse(f.bytes, link: try #require(f.link), into: &p)
            var c = PacketCounts()
            c.add(p)
            out.append(FrameVerdict(counts: c, reason: p.malformed?.rawValue ?? "ok"))
        }
        return out
    }

    func tsharkVerdicts(_ tshark: String, _ path: String) throws -> [FrameVerdict] {
        let fields = ["frame.protocols", "ip.src", "ipv6.src", "tcp.flags", "tcp.urgent_pointer", "_ws.malformed", "_ws.short",
                      "_ws.expert.severity"]
        let (status, output) = try run(tshark, ["-r", path] + Self.o + ["-T", "fields", "-E", "separator=/t"]
                                       + fields.flatMap { ["-e", $0] })
        try #require(status == 0, "tshark failed on \(path)")
        return output.split(separator: "\n", omittingEmptySubsequences: true).map { line in
            let col = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            var c = PacketCounts()
            c.frames = 1
            let layers = col[0].split(separator: ":").map(String.init)
            let ipIndex = layers.firstIndex { $0 == "ip" || $0 == "ipv6" }
            if let ipIndex {
                if layers[ipIndex] == "ip", !col[1].isEmpty { c.ipv4 = 1 }
                if layers[ipIndex] == "ipv6", !col[2].isEmpty { c.ipv6 = 1 }
                let skipped: Set<String> = ["ah", "ipv6.hopopts", "ipv6.routing", "ipv6.fraghdr", "ipv6.dstopts"]
                let next = layers[(ipIndex + 1)...].first { !skipped.contains($0) }
                // docs/output.md asks for the whole fixed header (tshark shows the flags from 14
                // bytes on): the urgent pointer is its last field.
                if next == "tcp", !col[4].isEmpty, let flagsText = col[3].split(separator: ",").first,
                   let flags = UInt8(flagsText.dropFirst(2), radix: 16) {
                    c.tcp = 1
                    let f = TCPFlags(rawValue: flags)
                    if f.isSYN { c.syn = 1 }
                    if f.isSYNACK { c.synack = 1 }
                    if f.isRST { c.rst = 1 }
                    if f.isFIN { c.fin = 1 }
                }
            }
            let errorSeverity = "8388608"
            if !col[5].isEmpty || !col[6].isEmpty || col[7].split(separator: ",").contains(Substring(errorSeverity)) {
                c.malformed = 1
            }
            return FrameVerdict(counts: c, reason: col[0])
        }
    }

    func run(_ tool: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        // readToEnd throws (rather than traps, as readDataToEndOfFile does) on a read error.
        let data = try pipe.fileHandleForReading.readToEnd() ?? Data()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

extension PacketCounts {
    mutating func merge(_ o: PacketCounts) {
        frames += o.frames; ipv4 += o.ipv4; ipv6 += o.ipv6; tcp += o.tcp; syn += o.syn
        synack += o.synack; rst += o.rst; fin += o.fin; malformed += o.malformed
    }
}
