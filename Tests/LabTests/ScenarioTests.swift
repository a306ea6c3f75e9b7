import Foundation
import Testing
import Lab
import PacketParser
import TestSupport

@Suite struct ScenarioTests {
    static let kinds = ["legit", "synack-carpet", "rst-flood", "blind-reset", "mixed"]

    @Test func namesRoundTripAndIngressVariantsExist() {
        for s in Scenario.all { #expect(Scenario(name: s.name) == s) }
        #expect(Scenario(name: "mixed-ingress")?.ingressOnly == true)
        #expect(Scenario(name: "legit-ingress")?.kind == .legit)
        #expect(Scenario(name: "carpet") == nil)
        #expect(Scenario.all.count == 10)
    }

    @Test func sameSeedSameBytesOtherSeedOtherBytes() {
        let a = Generated("mixed", seed: 42, packets: 3000)
        let b = Generated("mixed", seed: 42, packets: 3000)
        let c = Generated("mixed", seed: 43, packets: 3000)
        #expect(a.frames == b.frames && a.times == b.times && a.labels == b.labels)
        #expect(a.frames != c.frames)
    }

    @Test(arguments: kinds)
    func everyFrameIsTCPWithValidChecksumsInTimeOrder(name: String) {
        let g = Generated(name, seed: 3, packets: 4000)
        #expect(g.frames.count == g.stats.frames)
        var bad = 0
        for (i, f) in g.frames.enumerated() {
            guard let d = Decoder.decode(f), d.ipChecksumOK, d.tcpChecksumOK else { bad += 1; continue }
            if i > 0 { #expect(g.times[i] >= g.times[i - 1]) }
            // The lab address plan only.
            let lab = [d.source, d.destination].allSatisfy { a in
                a.count == 4 ? [198, 203].contains(a[0]) : Array(a[0..<4]) == [0x20, 0x01, 0x0d, 0xb8]
            }
            #expect(lab)
            // Every frame has a protected side.
            #expect(Decoded.isProtected(d.source) || Decoded.isProtected(d.destination))
        }
        #expect(bad == 0)
        // The library's own parser agrees: TCP, not malformed.
        for f in g.frames.prefix(2000) {
            let p = PacketParser.parse(f, link: .ethernet)
            #expect(p.hasTCP && p.malformed == nil)
        }
    }

    @Test(arguments: kinds)
    func labelsMatchWhatTheFramesAre(name: String) {
        let g = Generated(name, seed: 5, packets: 4000)
        let ds = g.decoded()
        for (d, l) in zip(ds, g.labels) {
            switch l {
            case .legit:
                #expect(!Decoded.isReflectorRange(d.source) && !Decoded.isReflectorRange(d.destination))
            case .attackSynack:
                #expect(d.isSYNACK && d.inbound && Decoded.isReflectorRange(d.source))
            case .attackRst:
                #expect(d.isRST && d.inbound && Decoded.isReflectorRange(d.source))
            case .attackBlindReset:
                #expect(d.isRST && d.inbound && !Decoded.isReflectorRange(d.source))
            case .attackBackscatter:
                #expect(d.isRST && !d.inbound && Decoded.isReflectorRange(d.destination))
            }
        }
        let kinds = Set(g.labels)
        switch name {
        case "legit": #expect(kinds == [.legit])
        case "synack-carpet": #expect(kinds == [.legit, .attackSynack, .attackBackscatter])
        case "rst-flood": #expect(kinds == [.legit, .attackRst])
        case "blind-reset": #expect(kinds == [.legit, .attackBlindReset])
        default: #expect(kinds == Set(FrameLabel.allCases))
        }
    }

    /// Every inbound legit SYN-ACK answers a SYN seen before it (reversed 4-tuple, ack = ISN+1),
    /// which is what symmetric mode accepts; no attack SYN-ACK does.
    @Test func legitSYNACKsAnswerEarlierSYNsAndAttackOnesNever() {
        let g = Generated("mixed", seed: 9, packets: 6000)
        var synISN: [[UInt8]: UInt32] = [:]
        var answered = 0
        for (d, l) in zip(g.decoded(), g.labels) {
            // TCP Fast Open: the SYN's data is acknowledged too.
            if d.isSYN { synISN[d.directedKey] = d.seq &+ UInt32(d.payloadLength) }
            guard d.isSYNACK else { continue }
            let reversed = d.destination + [UInt8(d.destinationPort >> 8), UInt8(d.destinationPort & 0xff)]
                + d.source + [UInt8(d.sourcePort >> 8), UInt8(d.sourcePort & 0xff)]
            let solicited = synISN[reversed].map { $0 &+ 1 == d.ack } ?? false
            #expect(solicited == (l == .legit))
            if solicited { answered += 1 }
        }
        #expect(answered > 50)
    }

    @Test func legitHasTheVarietyItPromises() {
        let g = Generated("legit", seed: 11, packets: 20_000)
        let ds = g.decoded()
        #expect(ds.contains { $0.vlanTags == 1 })
        #expect(ds.contains { $0.vlanTags == 2 })
        #expect(ds.contains { !$0.isIPv4 })
        #expect(ds.contains { $0.ipOptionsLength > 0 })
        #expect(ds.contains { !$0.extensionHeaders.isEmpty })
        // Windows and Linux SYN option orders both present.
        #expect(ds.contains { $0.isSYN && $0.tcpOptions.starts(with: [2, 4, 5, 0xb4, 4, 2, 8, 10]) })
        #expect(ds.contains { $0.isSYN && $0.tcpOptions.starts(with: [2, 4, 5, 0xb4, 1, 3, 3, 8]) })
        // TCP Fast Open: a SYN with a cookie option (kind 34) and data, answered by a SYN-ACK
        // that acknowledges the data.
        let tfo = ds.filter { $0.isSYN && $0.payloadLength > 0 }
        #expect(!tfo.isEmpty && tfo.allSatisfy { $0.tcpOptions.count == 32 && $0.tcpOptions[22] == 34 })
        #expect(tfo.contains { syn in
            ds.contains { $0.isSYNACK && $0.destinationPort == syn.sourcePort && $0.destination == syn.source
                && $0.ack == syn.seq &+ 1 &+ UInt32(syn.payloadLength) }
        })

        var syns: [[UInt8]: [Int64]] = [:], synAcks: [[UInt8]: Int] = [:]
        var firstSender: [[UInt8]: [UInt8]] = [:]
        var endings: Set<String> = []
        for d in ds {
            if d.isSYN { syns[d.directedKey, default: []].append(d.time); firstSender[d.flowKey] = firstSender[d.flowKey] ?? d.source }
            if d.isSYNACK { synAcks[d.directedKey, default: 0] += 1 }
            guard let opener = firstSender[d.flowKey] else { continue }
            let fromClient = d.source == opener
            let inside = Decoded.isProtected(d.source) ? "inside" : "outside"
            if d.isRST && d.flags & 0x10 != 0 && d.ack != 0 && d.seq == 0 { endings.insert("refused-by-\(inside)") }
            else if d.isRST { endings.insert("rst-from-\(fromClient ? "client" : "server")") }
            if d.isFIN { endings.insert("fin-from-\(fromClient ? "client" : "server")") }
        }
        #expect(endings.isSuperset(of: ["refused-by-inside", "refused-by-outside", "rst-from-client",
                                        "rst-from-server", "fin-from-client", "fin-from-server"]), "\(endings)")
        // Retransmitted SYNs on the RTO back-off (Linux 1 s, 2 s; Windows 3 s).
        let retransmitted = syns.values.filter { $0.count > 1 }
        #expect(!retransmitted.isEmpty)
        let gaps = retransmitted.flatMap { t in zip(t.dropFirst(), t).map { Double($0 - $1) / 1e9 } }
        #expect(gaps.allSatisfy { g in [1.0, 2, 3, 4, 6, 8, 16, 32].contains { abs($0 - g) < 0.01 } }, "\(gaps.prefix(10))")
        #expect(synAcks.values.contains { $0 > 1 })
    }

    @Test func carpetReflectorsRetransmitWithLinuxTimingAndTheSameISN() {
        let g = Generated("synack-carpet", seed: 13, packets: 20_000)
        var groups: [[UInt8]: [(Int64, UInt32, UInt32)]] = [:]
        var reflectors = Set<[UInt8]>(), victims = Set<[UInt8]>()
        for (d, l) in zip(g.decoded(), g.labels) where l == .attackSynack {
            groups[d.directedKey, default: []].append((d.time, d.seq, d.ack))
            reflectors.insert(d.source)
            victims.insert(d.destination)
        }
        #expect(reflectors.count >= 1000)
        // Across the whole /24, not a few hosts.
        #expect(victims.filter { $0.count == 4 }.count > 200)
        var full = 0, short = 0
        for (_, copies) in groups {
            #expect(Set(copies.map(\.1)).count == 1 && Set(copies.map(\.2)).count == 1)
            let offsets = copies.map { Double($0.0 - copies[0].0) / 1e9 }
            let linux = [0.0, 1, 3, 7, 15, 31], windows = [0.0, 3, 9]
            let schedule = offsets.count <= 3 && offsets.count > 1 && abs(offsets[1] - 3) < 0.05 ? windows : linux
            for (o, want) in zip(offsets, schedule) { #expect(abs(o - want) < 0.01) }
            if copies.count == 6 { full += 1 } else { short += 1 }
        }
        #expect(full > groups.count / 3)
        #expect(short > 0)
        // Destination ports outside the Linux ephemeral range occur.
        #expect(groups.keys.contains { k in
            let port = UInt16(k[k.count - 2]) << 8 | UInt16(k[k.count - 1])
            return port < 32768 || port > 60999
        })
        // Backscatter RSTs answer a SYN-ACK's ack exactly (seq = SEG.ACK), and that reflector stops.
        let ds = g.decoded()
        for (i, l) in g.labels.enumerated() where l == .attackBackscatter {
            let rst = ds[i]
            let reverse = rst.destination + [UInt8(rst.destinationPort >> 8), UInt8(rst.destinationPort & 0xff)]
                + rst.source + [UInt8(rst.sourcePort >> 8), UInt8(rst.sourcePort & 0xff)]
            let copies = groups[reverse] ?? []
            #expect(copies.count == 1 && copies.first?.2 == rst.seq)
        }
    }

    /// Forged resets: right 4-tuple, sequence in the receiver's window but never exact, or far
    /// outside it; both kinds occur.
    @Test func blindResetsAreInWindowOrFarOutsideNeverExact() {
        let g = Generated("blind-reset", seed: 17, packets: 20_000)
        var nextSeq: [[UInt8]: UInt32] = [:]
        var inWindow = 0, outside = 0
        for (d, l) in zip(g.decoded(), g.labels) {
            if l == .legit {
                nextSeq[d.directedKey] = d.seq &+ d.sequenceSpace
                continue
            }
            guard l == .attackBlindReset else { continue }
            guard let rcvNext = nextSeq[d.directedKey] else { Issue.record("forged RST on an unseen flow"); continue }
            let offset = d.seq &- rcvNext
            #expect(offset != 0)
            if offset < 2058 { inWindow += 1 } else {
                #expect(offset > 262_656 + 65_536)
                outside += 1
            }
        }
        #expect(inWindow > 20 && outside > 20)
    }

    @Test(arguments: kinds)
    func ingressVariantIsTheInboundSubset(name: String) {
        let full = Generated(name, seed: 21, packets: 3000)
        let ingress = Generated(name + "-ingress", seed: 21, packets: 3000)
        var expected: [[UInt8]] = [], expectedLabels: [FrameLabel] = []
        for (i, f) in full.frames.enumerated() where Decoder.decode(f)!.inbound {
            expected.append(f); expectedLabels.append(full.labels[i])
        }
        #expect(ingress.frames == expected && ingress.labels == expectedLabels)
        #expect(ingress.frames.allSatisfy { Decoder.decode($0)!.inbound })
        #expect(!ingress.frames.isEmpty && ingress.frames.count < full.frames.count)
    }

    @Test(arguments: [2_000, 20_000, 100_000])
    func packetsIsRoughlyHonoured(packets: Int) {
        for name in ScenarioTests.kinds {
            let g = ScenarioGenerator(scenario: Scenario(name: name)!, seed: 1, packets: packets)
            let stats = g.run { _, _, _ in }
            let ratio = Double(stats.frames) / Double(packets)
            #expect(ratio > 0.85 && ratio < 1.15, "\(name) \(packets): \(stats.frames)")
        }
    }

    @Test func rawIPOutputIsTheEthernetFramesWithoutTheirLinkHeaders() {
        func collect(_ link: LinkType) -> [[UInt8]] {
            var out: [[UInt8]] = []
            _ = ScenarioGenerator(scenario: Scenario(kind: .mixed), seed: 2, packets: 1500, link: link).run { f, _, _ in
                out.append(Array(f))
            }
            return out
        }
        let eth = collect(.ethernet), raw = collect(.raw)
        #expect(eth.count == raw.count && !raw.isEmpty)
        for (e, r) in zip(eth, raw) {
            let tags = Decoder.decode(e)!.vlanTags
            #expect(Array(e[(14 + 4 * tags)...]) == r)
            #expect(Decoder.decode(r, ethernet: false)?.tcpChecksumOK == true)
        }
    }

    @Test func filesHaveOneLabelRowPerFrame() throws {
        let pcap = TestEnvironment.temporaryPath("mixed.pcap"), csv = TestEnvironment.temporaryPath("mixed.csv")
        let stats = try ScenarioFiles.write(Scenario(name: "mixed")!, seed: 4, packets: 5000, pcap: pcap, labels: csv)
        let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        #expect(rows.first == "frame,label")
        #expect(rows.count - 1 == stats.frames)
        #expect(rows[1] .hasPrefix("1,") && rows.last!.hasPrefix("\(stats.frames),"))
        // Count the pcap's records independently.
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: pcap)))
        #expect(Array(data[0..<4]) == [0x4d, 0x3c, 0xb2, 0xa1])
        var off = 24, records = 0
        while off + 16 <= data.count {
            let cap = Int(data[off + 8]) | Int(data[off + 9]) << 8 | Int(data[off + 10]) << 16 | Int(data[off + 11]) << 24
            off += 16 + cap
            records += 1
        }
        #expect(off == data.count && records == stats.frames)
    }

    @Test func snapLengthCutsFramesButKeepsWireLengths() throws {
        let pcap = TestEnvironment.temporaryPath("snap.pcap")
        let stats = try ScenarioFiles.write(Scenario(name: "legit")!, seed: 4, packets: 3000, snapLength: 96,
                                            pcap: pcap, labels: nil)
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: pcap)))
        func le32(_ o: Int) -> Int { Int(data[o]) | Int(data[o + 1]) << 8 | Int(data[o + 2]) << 16 | Int(data[o + 3]) << 24 }
        #expect(le32(16) == 96)
        var off = 24, records = 0, cut = 0
        while off + 16 <= data.count {
            let cap = le32(off + 8), wire = le32(off + 12)
            #expect(cap <= 96 && wire >= cap)
            if wire > cap { cut += 1 }
            off += 16 + cap
            records += 1
        }
        #expect(records == stats.frames && cut > 0)
    }

    @Test func tsharkReadsTheCaptureAndCountsTheSameFramesWithGoodChecksums() throws {
        guard let tshark = TestEnvironment.which("tshark") else {
            TestEnvironment.unavailable("tshark is not installed")
            return
        }
        let pcap = TestEnvironment.temporaryPath("tshark.pcap")
        let stats = try ScenarioFiles.write(Scenario(name: "mixed")!, seed: 8, packets: 4000, pcap: pcap, labels: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tshark)
        p.arguments = ["-n", "-r", pcap, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                       "-T", "fields", "-e", "frame.number", "-e", "tcp.flags",
                       "-e", "ip.checksum.status", "-e", "tcp.checksum.status", "-e", "_ws.expert.severity"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let lines = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n")
        // tshark warns on stderr when run as root; that is the environment, not the capture.
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n").filter { !$0.hasPrefix("Running as user") }.joined(separator: "\n")
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(errors.isEmpty, "\(errors)")
        #expect(lines.count == stats.frames)
        // Every frame dissected as TCP; no bad checksum (status 0 is Bad, 1 Good, 2 unverified).
        #expect(lines.allSatisfy { $0.split(separator: "\t", omittingEmptySubsequences: false)[1].hasPrefix("0x") })
        let badChecksums = lines.filter { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false)
            return f[2] == "0" || f[3] == "0"
        }
        #expect(badChecksums.isEmpty, "\(badChecksums.prefix(3))")
    }
}
