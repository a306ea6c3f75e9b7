import Foundation
import Lab
import PacketParser
import Testing
import TestSupport

/// The packet bypasses of an inline filter, on a real kernel (three namespaces, scripts/netns-lab.sh):
/// forged SYN-ACKs and RSTs the rules cannot see, counted where they land, on the protected host
/// (frames delivered to it, and segments its TCP received after reassembly). Each runs against
/// the agent with the default rules and against the standalone `nft generate --kernel-only`
/// ruleset, with legitimately fragmented handshakes beside them that must still complete.
///
/// - Tiny fragments (RFC 1858, RFC 3128): a first fragment with 8 bytes of TCP (ports and
///   sequence number) and a second at offset 1 with the flags. Nothing reassembles before the
///   rules (no conntrack), so no `tcp flags` rule sees a SYN-ACK or RST, and the host reassembles
///   one. (A Linux host drops an IPv6 first fragment without the whole TCP header itself, RFC 8200
///   §4.5; the router delivered it all the same.)
/// - A Destination Options header of 304 bytes of "skip" options before the TCP header: the
///   kernel walks it and queues the packet for its flags, but the agent's 256-byte copy ends
///   inside the header.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct BypassTests {
    enum Guard: String, CaseIterable, CustomStringConvertible {
        case agent, kernelOnly = "kernel-only"
        var description: String { rawValue }
    }

    enum Attack: String, CaseIterable {
        /// The control: SYN-ACKs every rule sees.
        case plainSynacks4 = "plain SYN-ACKs (IPv4)"
        case tinyFragmentRsts4 = "RSTs in tiny fragments (IPv4)"
        case tinyFragmentSynacks4 = "SYN-ACKs in tiny fragments (IPv4)"
        case tinyFragmentRsts6 = "RSTs in tiny fragments (IPv6)"
        case tinyFragmentSynacks6 = "SYN-ACKs in tiny fragments (IPv6)"
        case destinationOptionsSynacks6 = "SYN-ACKs behind 304 bytes of destination options"
        case destinationOptionsRsts6 = "RSTs behind 304 bytes of destination options"

        var v6: Bool { self != .plainSynacks4 && !rawValue.hasSuffix("(IPv4)") }
        var flags: TCPFlags { rawValue.hasPrefix("RST") ? .rst : [.syn, .ack] }
        var fragmented: Bool { rawValue.contains("fragments") }
    }

    static let protect = InlineAgentTests.protect
    static let floodSize = 1000
    static let metricsPort = 9478

    // MARK: the attacks

    @Test(arguments: Guard.allCases)
    func forgedPacketsTheRulesCannotSeeNeverReachTheProtectedHost(guard kind: Guard) throws {
        try Env.requireReady()
        let lab = try LabNet("\(kind)", family: "rgt-bypass")
        defer { lab.tearDown() }
        let arrivals = try Arrivals(lab)
        let agent = try Self.protect(lab, kind)

        var leaks: [String] = []
        for attack in Attack.allCases {
            // Kernel enforcement meters RSTs it cannot tie to a flow (rst_rate, rst_burst): past
            // the budget they are dropped, within it they pass, by design, whatever their headers.
            if kind == .kernelOnly && attack == .destinationOptionsRsts6 { continue }
            let frames = (0..<Self.floodSize).flatMap { Self.forged(attack, $0, lab) }
            let before = try arrivals.read()
            try lab.runTrafgen(Self.trafgenConfig(frames), count: frames.count, gap: "2us", background: false)
            let after = try arrivals.settledRead()
            let (delivered, segments) = (after.frames - before.frames, after.segments - before.segments)
            measured("bypass \(kind): \(attack.rawValue): \(Self.floodSize) sent (\(frames.count) frames); "
                     + "reached the protected host: \(delivered) frames, \(segments) TCP segments")
            if delivered > 0 || segments > 0 { leaks.append("\(attack.rawValue): \(delivered) frames, \(segments) segments") }
        }
        #expect(leaks.isEmpty, "forged packets reached the protected host (\(kind)): \(leaks)")
        // Each tiny-fragment attack (an RST and a SYN-ACK flood per family) sent one first
        // fragment and one at offset 1 per packet: the table's named counters saw each of them,
        // and /metrics says the same.
        let metrics = try agent.map { try $0.metrics(port: Self.metricsPort) }
        for (family, reason) in [("4", "tiny_fragment"), ("4", "fragment_overlap"), ("6", "tiny_fragment"), ("6", "fragment_overlap")] {
            let listing = try lab.exec(lab.router, "nft list counter inet reflectguard drop_\(reason)_v\(family)").stdout
            let counted = try #require(listing.firstMatch(of: #/packets (\d+)/#).flatMap { Int($0.1) }, "\(listing)")
            #expect(counted <= 2 * Self.floodSize && counted >= 2 * Self.floodSize * 99 / 100, "\(reason) IPv\(family): \(counted)")
            if let metrics {
                let label = "{family=\"ipv\(family)\",reason=\"\(reason.replacingOccurrences(of: "_", with: "-"))\"}"
                #expect(AgentProcess.value(metrics, "reflectguard_kernel_drops_total" + label) == Double(counted), "\(label)")
            }
        }
        if let agent {
            let m = try agent.metrics(port: Self.metricsPort)
            let unreadable = AgentProcess.value(m, "reflectguard_packets_total{queue=\"0\",verdict=\"drop\",reason=\"unreadable-header\"}")
            measured("bypass agent: unreadable-header drops \(unreadable), victims armed \(AgentProcess.value(m, "reflectguard_victims_armed"))")
            #expect(unreadable > 0, "the agent judged the packets it could not read")
            #expect(agent.stop() == 0)
        }
    }

    // MARK: legitimate fragments

    /// A SYN-ACK answering a SYN the protected host sent, fragmented as a router may fragment it
    /// (the first fragment holds the whole fixed TCP header and 4 bytes of options, 24 bytes of
    /// TCP, the rest follows at offset 3): the first fragment is judged like any SYN-ACK and
    /// passes, the second leaves the rules untouched, the host reassembles the SYN-ACK. The same
    /// fragments answering no SYN are dropped: fragmenting hides nothing any more.
    @Test(arguments: Guard.allCases, [false, true])
    func fragmentedSolicitedSynacksStillArrive(guard kind: Guard, v6: Bool) throws {
        try Env.requireReady()
        let lab = try LabNet("\(kind)-legit\(v6 ? 6 : 4)", family: "rgt-bypass")
        defer { lab.tearDown() }
        let arrivals = try Arrivals(lab)
        let agent = try Self.protect(lab, kind)
        let n = 20
        let inside = try Self.insideMACs(lab)
        let client = v6 ? "2001:db8:2::2" : "198.18.2.2"
        let server = v6 ? "2001:db8:ff:200::1" : "198.19.200.1"
        func spec(_ i: Int, from: String, to: String, flags: TCPFlags) -> FrameSpec {
            let clientPort = UInt16(41000 + i)
            var s = FrameSpec(source: IPAddress(from)!, destination: IPAddress(to)!,
                              sourcePort: from == client ? clientPort : 443, destinationPort: from == client ? 443 : clientPort,
                              flags: flags, sequence: from == client ? Self.isn(i) : 0x5000_0000 &+ UInt32(i),
                              acknowledgment: from == client ? 0 : Self.isn(i) &+ 1)
            s.dontFragment = false
            s.options = TCPStack.linux.synOptions(mss: 1460, tsValue: UInt32(i))
            return s
        }
        // The protected host's SYNs (crafted, so the test knows their ISNs) leave through the router.
        var syns: [[UInt8]] = []
        for i in 0..<n {
            var s = spec(i, from: client, to: server, flags: .syn)
            s.sourceMAC = inside.host; s.destinationMAC = inside.router
            syns.append(FrameBuilder.frame(s))
        }
        try lab.runTrafgen(Self.trafgenConfig(syns), count: syns.count, gap: "100us", background: false,
                           from: lab.protected, device: "p0")
        usleep(200_000)

        func answers(_ range: Range<Int>) -> [[UInt8]] {
            range.flatMap { i -> [[UInt8]] in
                var s = spec(i, from: server, to: client, flags: [.syn, .ack])
                s.sourceMAC = Self.mac(lab.inetMAC); s.destinationMAC = Self.mac(lab.routerMAC)
                return Self.fragments(FrameBuilder.frame(s), first: 24, id: UInt32(0x4000 + i))
            }
        }
        let before = try arrivals.read()
        let solicited = answers(0..<n)
        try lab.runTrafgen(Self.trafgenConfig(solicited), count: solicited.count, gap: "100us", background: false)
        let middle = try arrivals.settledRead()
        // The same SYN-ACKs for ports no SYN came from.
        let unsolicited = answers(n..<(2 * n))
        try lab.runTrafgen(Self.trafgenConfig(unsolicited), count: unsolicited.count, gap: "100us", background: false)
        let after = try arrivals.settledRead()

        let arrived = middle.segments - before.segments, forged = after.segments - middle.segments
        measured("bypass \(kind) IPv\(v6 ? 6 : 4): fragmented solicited SYN-ACKs that reached the host's TCP: \(arrived)/\(n); unsolicited: \(forged)/\(n)")
        #expect(arrived == n, "solicited fragmented SYN-ACKs reassembled by the protected host")
        #expect(forged == 0, "unsolicited fragmented SYN-ACKs that reached the protected host")
        if let agent { #expect(agent.stop() == 0) }
    }

    // MARK: the guards

    /// Starts the agent (default rules, metrics on) or loads the kernel-only ruleset it generates.
    static func protect(_ lab: LabNet, _ kind: Guard) throws -> AgentProcess? {
        switch kind {
        case .agent:
            return try AgentProcess(lab, protect + ["--metrics", "\(metricsPort)"])
        case .kernelOnly:
            let rules = lab.tempPath("kernel-only.nft")
            try lab.exec(lab.router, "'\(Env.binary)' nft generate --kernel-only \(protect.joined(separator: " ")) > \(rules)")
            try lab.exec(lab.router, "nft -f \(rules)")
            return nil
        }
    }

    /// What reached the protected host: frames from the forged ranges as they arrive (before
    /// reassembly), and segments its TCP received (`Tcp: InSegs`, after reassembly).
    struct Arrivals {
        let lab: LabNet

        init(_ lab: LabNet) throws {
            self.lab = lab
            let f = lab.tempPath("arrivals.nft")
            try """
                table inet rgbypass {
                  counter frames {}
                  chain pre {
                    type filter hook prerouting priority -450; policy accept;
                    ip saddr 198.19.0.0/16 counter name "frames"
                    ip6 saddr 2001:db8:ff::/48 counter name "frames"
                  }
                }
                """.write(toFile: f, atomically: true, encoding: .utf8)
            try lab.exec(lab.protected, "nft -f \(f)")
        }

        /// `read` once the counts have stopped moving (what was sent may still be on its way).
        func settledRead() throws -> (frames: Int, segments: Int) {
            let r = try settled { let r = try read(); return [r.frames, r.segments] }
            return (r[0], r[1])
        }

        func read() throws -> (frames: Int, segments: Int) {
            let c = try lab.exec(lab.protected, "nft list counter inet rgbypass frames").stdout
            let snmp = try lab.exec(lab.protected, "cat /proc/net/snmp").stdout
            let tcp = snmp.split(separator: "\n").filter { $0.hasPrefix("Tcp:") }.map { $0.split(separator: " ") }
            guard let m = c.firstMatch(of: #/packets (\d+)/#), let frames = Int(m.1), tcp.count == 2,
                  let column = tcp[0].firstIndex(of: "InSegs"), let segments = Int(tcp[1][column]) else {
                throw HarnessError("cannot read arrivals: \(c) \(snmp)")
            }
            return (frames, segments)
        }
    }

    // MARK: frames

    static func isn(_ i: Int) -> UInt32 { 0x1000_0000 &+ UInt32(i) &* 7919 }

    /// Forged packet `i` of `attack`: Ethernet frames from the internet side (two for fragments).
    static func forged(_ attack: Attack, _ i: Int, _ lab: LabNet) -> [[UInt8]] {
        let source = attack.v6 ? "2001:db8:ff::\(String(i + 1, radix: 16))" : "198.19.\(i / 250).\(i % 250 + 1)"
        var s = FrameSpec(source: IPAddress(source)!, destination: IPAddress(attack.v6 ? "2001:db8:2::2" : "198.18.2.2")!,
                          sourcePort: 443, destinationPort: UInt16(20000 + i), flags: attack.flags,
                          sequence: UInt32(i) &* 2_654_435_761, acknowledgment: UInt32(i) &* 40_503)
        s.sourceMAC = mac(lab.inetMAC)
        s.destinationMAC = mac(lab.routerMAC)
        s.ipID = UInt16(truncatingIfNeeded: i)
        if attack.fragmented {
            s.dontFragment = false
            return fragments(FrameBuilder.frame(s), first: 8, id: UInt32(i))
        }
        if attack.rawValue.contains("destination options") {
            s.ipv6Extensions = [.destinationOptions(length: 304)]
            var f = FrameBuilder.frame(s)
            skipOptions(&f, at: 14 + 40, length: 304)
            return [f]
        }
        return [FrameBuilder.frame(s)]
    }

    /// Refills a Destination Options header with unknown options a host skips (type 0x1e: the
    /// top two bits 00, RFC 8200 §4.2). Linux refuses PadN runs longer than 7 bytes, and counts
    /// at most 8 options (net.ipv6.max_dst_opts_number): two options fill 304 bytes.
    static func skipOptions(_ f: inout [UInt8], at header: Int, length: Int) {
        var at = header + 2
        var left = length - 2
        while left > 0 {
            let n = min(left - 2, 200)
            f[at] = 0x1e
            f[at + 1] = UInt8(n)
            for k in 0..<n { f[at + 2 + k] = 0xa5 }
            at += 2 + n
            left -= 2 + n
        }
    }

    /// The IP packet of an Ethernet frame (no extension headers) split in two fragments, the
    /// first carrying `first` bytes (a multiple of 8) of what follows the IP header; IPv6 gets a
    /// Fragment header in each.
    static func fragments(_ frame: [UInt8], first: Int, id: UInt32) -> [[UInt8]] {
        let ethernet = Array(frame[0..<14])
        let v4 = frame[12] == 0x08
        let headerLength = v4 ? Int(frame[14] & 0x0f) * 4 : 40
        let header = Array(frame[14..<(14 + headerLength)])
        let data = Array(frame[(14 + headerLength)...])
        func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        func piece(_ bytes: ArraySlice<UInt8>, offset: Int, more: Bool) -> [UInt8] {
            var h = header
            if v4 {
                h.replaceSubrange(2..<4, with: be16(headerLength + bytes.count))
                h.replaceSubrange(4..<6, with: be16(Int(id & 0xffff)))
                h.replaceSubrange(6..<8, with: be16(offset / 8 | (more ? 0x2000 : 0)))
                h.replaceSubrange(10..<12, with: [0, 0])
                h.replaceSubrange(10..<12, with: be16(Int(~h.withUnsafeBytes { Checksum.sum($0) })))
                return ethernet + h + bytes
            }
            // RFC 8200 §4.5: next header, reserved, offset in 8-byte units << 3 | M, identification.
            let fragmentHeader = [h[6], 0] + be16(offset | (more ? 1 : 0)) + be16(Int(id >> 16)) + be16(Int(id & 0xffff))
            h[6] = 44
            h.replaceSubrange(4..<6, with: be16(8 + bytes.count))
            return ethernet + h + fragmentHeader + bytes
        }
        return [piece(data[0..<first], offset: 0, more: true), piece(data[first...], offset: first, more: false)]
    }

    /// A trafgen configuration sending each frame once, in order.
    static func trafgenConfig(_ frames: [[UInt8]]) -> String {
        frames.map { f in "{ " + f.map { "0x" + String($0, radix: 16) }.joined(separator: ", ") + " }" }
            .joined(separator: "\n") + "\n"
    }

    static func mac(_ text: String) -> UInt64 {
        text.split(separator: ":").reduce(0) { $0 << 8 | (UInt64($1, radix: 16) ?? 0) }
    }

    /// The protected host's p0 and the router's r1: the crafted SYNs go from one to the other.
    static func insideMACs(_ lab: LabNet) throws -> (host: UInt64, router: UInt64) {
        func read(_ ns: String, _ dev: String) throws -> UInt64 {
            let out = try sh("ip -n \(ns) -o link show \(dev)").stdout
            guard let m = out.firstMatch(of: #/link/ether ([0-9a-f:]+)/#) else { throw HarnessError("no MAC for \(dev): \(out)") }
            return mac(String(m.1))
        }
        return (try read(lab.protected, "p0"), try read(lab.router, "r1"))
    }
}
