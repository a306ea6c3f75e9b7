import Foundation
import Lab
import PacketParser
import Testing
import TestSupport
import VerdictEngine
import XDPPath

/// The XDP program against the nft kernel-only ruleset (`nft generate --kernel-only`: every
/// protected network armed), frame by frame: each frame goes through a real router namespace
/// running the ruleset (a SYN from the protected side, then SYN-ACKs and RSTs from the internet
/// side) and is seen arriving or not; the same frames, in the same order, go through the loaded
/// XDP programs with BPF_PROG_TEST_RUN. Where the program walks the headers, it drops everything
/// nft drops, and more only where the engine's rule is stricter than nft's: a SYN-ACK on a
/// pending 4-tuple whose ack is not ISN + 1 (nft matches the tuple only). Where it does not walk
/// them (fragments, long IPv6 chains), it passes and nft decides.
@Suite(.serialized, .enabled(if: Env.enabled, Comment(rawValue: Env.missing ?? "")))
struct XDPNftParityTests {
    enum Shape: CaseIterable {
        case plain, ipv4Options, hopByHop, destinationOptions, routingChain, atomicFragment, longChain
        var walked: Bool { self != .atomicFragment && self != .longChain }
        var ipv6: Bool { self != .plain && self != .ipv4Options }
        func apply(_ s: inout FrameSpec) {
            switch self {
            case .plain: break
            case .ipv4Options: s.ipv4Options = [0x94, 0x04, 0, 0, 1, 1, 1, 0]
            case .hopByHop: s.ipv6Extensions = [.hopByHop(length: 8)]
            case .destinationOptions: s.ipv6Extensions = [.destinationOptions(length: 304)]
            // (With a routing header the lab's router forwards nothing, agent or not: kept to the
            // program's own test, VerdictParityTests.)
            case .routingChain: s.ipv6Extensions = [.hopByHop(length: 8), .destinationOptions(length: 16)]
            case .atomicFragment: s.ipv6Extensions = [.fragment(identification: 9)]
            case .longChain: s.ipv6Extensions = Array(repeating: .destinationOptions(length: 8), count: 9)
            }
        }
    }

    struct Case {
        var frame: [UInt8]
        var inbound: Bool
        var shape: Shape
        var label: String
        /// A SYN-ACK on the pending 4-tuple with a wrong ack: the engine's rule drops it, nft's accepts.
        var wrongAckOnTuple: Bool
        /// Bytes of the TCP header that identify the frame after forwarding (sequence to urgent pointer).
        var needle: [UInt8]
    }

    static func mac(_ s: String) -> UInt64 { s.split(separator: ":").reduce(0) { $0 << 8 | UInt64($1, radix: 16)! } }

    static func cases(_ lab: LabNet, rtrInsideMAC: String, protMAC: String) -> [Case] {
        var rng = SplitMix(state: 0x1717)
        var out: [Case] = []
        var frame: [UInt8] = []
        for shape in Shape.allCases {
            for round in 0..<4 {
                let client = shape.ipv6 ? IPAddress("2001:db8:2::2")! : IPAddress(v4: 198, 18, 2, 2)
                let allowlisted = round == 3
                let remote = shape.ipv6 ? IPAddress(allowlisted ? "2001:db8:aa::\(round + 1)" : "2001:db8:ff::\(round + 1)")!
                    : (allowlisted ? IPAddress(v4: 203, 0, 113, 9) : IPAddress(v4: 198, 19, UInt8(round), 7))
                let cport = UInt16(33000 + rng.below(20000))
                let isn = UInt32(truncatingIfNeeded: rng.next())
                func add(_ s: FrameSpec, inbound: Bool, wrongAck: Bool = false, _ label: String) {
                    var s = s
                    shape.apply(&s)
                    if inbound {
                        s.sourceMAC = mac(lab.inetMAC); s.destinationMAC = mac(lab.routerMAC)
                    } else {
                        s.sourceMAC = mac(protMAC); s.destinationMAC = mac(rtrInsideMAC)
                    }
                    let n = FrameBuilder.build(s, into: &frame)
                    let f = Array(frame.prefix(n))
                    let tcp = n - s.payload.count - 20
                    out.append(Case(frame: f, inbound: inbound, shape: shape, label: "\(shape) round \(round) \(label)",
                                    wrongAckOnTuple: wrongAck, needle: Array(f[(tcp + 4)..<(tcp + 20)])))
                }
                add(FrameSpec(source: client, destination: remote, sourcePort: cport, destinationPort: 443, flags: .syn, sequence: isn),
                    inbound: false, "SYN")
                func reply(_ flags: TCPFlags, _ ack: UInt32, port: UInt16) -> FrameSpec {
                    FrameSpec(source: remote, destination: client, sourcePort: 443, destinationPort: port, flags: flags,
                              sequence: UInt32(truncatingIfNeeded: rng.next()), acknowledgment: ack)
                }
                add(reply([.syn, .ack], isn &+ 7, port: cport), inbound: true, wrongAck: true, "SYN-ACK wrong ack")
                add(reply([.syn, .ack], isn &+ 1, port: cport), inbound: true, "SYN-ACK right ack")
                add(reply([.syn, .ack], isn &+ 1, port: cport &+ 1), inbound: true, "SYN-ACK other port")
                add(reply([.syn, .ack], 12345, port: 80), inbound: true, "SYN-ACK no SYN")
            }
        }
        return out
    }

    /// Sends each frame from its side's namespace and says whether it arrived on the far side:
    /// one process with a packet socket in each namespace (setns between opening them).
    static let sender = """
        import ctypes, os, socket, sys, select
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        def enter(ns):
            fd = os.open("/run/netns/" + ns, os.O_RDONLY)
            if libc.setns(fd, 0x40000000) != 0: raise OSError(ctypes.get_errno(), "setns " + ns)
            os.close(fd)
        prot, inet = sys.argv[1], sys.argv[2]
        enter(prot)
        p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); p.bind(("p0", 0))
        enter(inet)
        i = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); i.bind(("i0", 0))
        for line in sys.stdin:
            d, frame, needle = line.split()
            frame, needle = bytes.fromhex(frame), bytes.fromhex(needle)
            tx, rx = (i, p) if d == "in" else (p, i)
            while select.select([rx], [], [], 0)[0]: rx.recv(65535)
            tx.send(frame)
            seen = False
            while not seen:
                r, _, _ = select.select([rx], [], [], 0.3)
                if not r: break
                data, addr = rx.recvfrom(65535)
                if addr[2] != socket.PACKET_OUTGOING and needle in data: seen = True
            print("pass" if seen else "drop", flush=True)
        """

    @Test func xdpDropsWhatTheKernelOnlyRulesetDrops() throws {
        try Env.requireReady()
        guard geteuid() == 0, let bpf = try? BPFPrograms(BPFPrograms.Configuration()) else {
            TestEnvironment.unavailable("BPF programs cannot be loaded here")
            return
        }
        let lab = try LabNet("xdpnft", family: "rg17")
        defer { lab.tearDown() }
        let protect = ["--protect", "198.18.2.0/24", "--protect", "2001:db8:2::/64",
                       "-D", "allowlist_v4={ 203.0.113.0/24 }", "-D", "allowlist_v6={ 2001:db8:aa::/48 }"]
        let rules = lab.tempPath("kernel-only.nft")
        try lab.exec(lab.router, "'\(Env.binary)' nft generate --kernel-only \(protect.map { "'\($0)'" }.joined(separator: " ")) > \(rules)")
        try lab.exec(lab.router, "nft -f \(rules)")
        // The allowlisted reflectors sit on the internet side too.
        try lab.exec(lab.router, "ip route add 203.0.113.0/24 via 198.18.1.2")
        try lab.exec(lab.router, "ip -6 route add 2001:db8:aa::/48 via 2001:db8:1::2")
        // The protected host answers nothing it did not ask for (its RSTs would only add noise).
        try lab.exec(lab.protected, "nft add table inet rgquiet")
        try lab.exec(lab.protected, "nft 'add chain inet rgquiet out { type filter hook output priority 0; policy drop; }'")
        let rtrInside = try lab.exec(lab.router, "cat /sys/class/net/r1/address").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let protMAC = try lab.exec(lab.protected, "cat /sys/class/net/p0/address").stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        try bpf.setPrefixes("protected", [CIDR("198.18.2.0/24")!, CIDR("2001:db8:2::/64")!])
        try bpf.setPrefixes("allow", [CIDR("203.0.113.0/24")!, CIDR("2001:db8:aa::/48")!])
        for p in ["198.18.2.0/24", "2001:db8:2::/64"] { try bpf.arm(CIDR(p)!, timeout: 600) }

        let cases = Self.cases(lab, rtrInsideMAC: rtrInside, protMAC: protMAC)
        let script = lab.tempPath("send.py")
        try Self.sender.write(toFile: script, atomically: true, encoding: .utf8)
        let input = lab.tempPath("frames.txt")
        func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
        try cases.map { "\($0.inbound ? "in" : "out") \(hex($0.frame)) \(hex($0.needle))" }.joined(separator: "\n")
            .appending("\n").write(toFile: input, atomically: true, encoding: .utf8)
        let r = try sh("python3 \(script) \(lab.protected) \(lab.inet) < \(input)")
        let nft = r.stdout.split(separator: "\n").map(String.init)
        try #require(nft.count == cases.count, "sender: \(r.stderr)")

        var agree = 0, stricter = 0, unwalked = 0, nftDrops = 0
        for (c, n) in zip(cases, nft) {
            let x = try bpf.testRun(c.inbound ? .synackCheck : .synRecord, frame: c.frame)
            let xdpDrop = x == BPFPrograms.xdpDrop, nftDrop = n == "drop"
            if nftDrop { nftDrops += 1 }
            if !c.inbound {
                #expect(!nftDrop && !xdpDrop, "\(c.label): a SYN must pass both (nft \(n), XDP \(x))")
            } else if !c.shape.walked {
                #expect(!xdpDrop, "\(c.label): not walked, XDP must pass")
                unwalked += 1
            } else if xdpDrop == nftDrop {
                agree += 1
            } else {
                #expect(xdpDrop && c.wrongAckOnTuple, "\(c.label): XDP \(xdpDrop ? "drop" : "pass"), nft \(n)")
                stricter += 1
            }
        }
        measured("xdp vs nft kernel-only: \(cases.count) frames; \(agree) inbound verdicts equal, \(stricter) dropped by XDP only (wrong ack on a pending 4-tuple), \(unwalked) not walked (passed to nft), nft dropped \(nftDrops)")
        #expect(agree >= 60 && nftDrops >= 30 && stricter > 0, "agree \(agree), nft drops \(nftDrops), stricter \(stricter)")
    }
}
