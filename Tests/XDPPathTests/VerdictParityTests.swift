#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Lab
import PacketParser
import Testing
import TestSupport
import VerdictEngine
import XDPPath

/// The XDP programs against the engine, packet by packet: the same SYNs and SYN-ACKs (right and
/// wrong acks, TCP Fast Open, allowlisted ends, unarmed networks, RSTs) go through the loaded
/// programs with BPF_PROG_TEST_RUN and through `Engine.decide`, in the same order, under every
/// encapsulation the lab builds. On an armed prefix, the program drops exactly what the engine
/// drops; everywhere else, and for every header chain it does not walk, it passes (the stack's
/// nft rules and the agent then decide as without it).
@Suite(.serialized) struct VerdictParityTests {
    static let protectedNets = ["198.18.2.0/24", "2001:db8:2::/64", "198.18.3.0/24"]
    /// Armed: the first two; 198.18.3.0/24 is protected but not armed.
    static let armedNets = ["198.18.2.0/24", "2001:db8:2::/64"]
    static let allowNets = ["203.0.113.0/24", "2001:db8:aa::/48"]

    enum Shape: CaseIterable {
        case plain, dot1Q, qinq, ipv4Options, hopByHop, destinationOptions, routingAndDestination, atomicFragment,
             longChain, ipv4Fragment
        /// Whether the program walks this shape's headers (else it passes every packet of it).
        var walked: Bool { self != .atomicFragment && self != .longChain && self != .ipv4Fragment }
        func applies(ipv6: Bool) -> Bool {
            switch self {
            case .plain, .dot1Q, .qinq: return true
            case .ipv4Options, .ipv4Fragment: return !ipv6
            case .hopByHop, .destinationOptions, .routingAndDestination, .atomicFragment, .longChain: return ipv6
            }
        }
        func apply(_ s: inout FrameSpec) {
            switch self {
            case .plain: break
            case .dot1Q: s.vlan = .dot1Q(vid: 42)
            case .qinq: s.vlan = .qinq(outer: 7, inner: 42)
            case .ipv4Options: s.ipv4Options = [0x94, 0x04, 0, 0, 1, 1, 1, 0] // Router Alert, NOPs, EOL
            case .hopByHop: s.ipv6Extensions = [.hopByHop(length: 8)]
            case .destinationOptions: s.ipv6Extensions = [.destinationOptions(length: 304)]
            case .routingAndDestination: s.ipv6Extensions = [.hopByHop(length: 16), .routing, .destinationOptions(length: 8)]
            case .atomicFragment: s.ipv6Extensions = [.fragment(identification: 9)]
            case .longChain: s.ipv6Extensions = Array(repeating: .destinationOptions(length: 8), count: 9)
            case .ipv4Fragment: s.dontFragment = false // and MF set on the built frame
            }
        }
    }

    static func loadPrograms() -> BPFPrograms? {
        guard geteuid() == 0 else { TestEnvironment.unavailable("loading BPF programs needs root"); return nil }
        var c = BPFPrograms.Configuration()
        c.pendingCapacity = 4096
        do { return try BPFPrograms(c) } catch {
            TestEnvironment.unavailable("BPF programs cannot be loaded here: \(error)")
            return nil
        }
    }

    @Test func sameVerdictsAsTheEngine() throws {
        guard let bpf = Self.loadPrograms() else { return }
        try bpf.setPrefixes("protected", Self.protectedNets.map { CIDR($0)! })
        try bpf.setPrefixes("allow", Self.allowNets.map { CIDR($0)! })
        for n in Self.armedNets { try bpf.arm(CIDR(n)!, timeout: 600) }
        var policy = Policy()
        for n in Self.protectedNets { policy.protected.insert(CIDR(n)!) }
        for n in Self.allowNets { policy.allowlist.insert(CIDR(n)!) }
        let engine = Engine(policy: policy, seed: 17)
        let armed = PrefixSet(Self.armedNets.map { CIDR($0)! })
        var rng = SplitMix(state: 0x17)
        var frame: [UInt8] = []
        var compared = 0, xdpDrops = 0, engineDrops = 0, passedUnwalked = 0
        var clock: Nanoseconds = 1_000_000_000
        for shape in Shape.allCases {
            for v6 in [false, true] where shape.applies(ipv6: v6) {
                for round in 0..<12 {
                    let host = UInt8(2 + rng.below(200))
                    let client = v6 ? IPAddress("2001:db8:2::\(String(host, radix: 16))")! : IPAddress(v4: 198, 18, rng.below(4) == 0 ? 3 : 2, host)
                    let remote = rng.below(5) == 0
                        ? (v6 ? IPAddress("2001:db8:aa::\(round + 1)")! : IPAddress(v4: 203, 0, 113, UInt8(round + 1)))
                        : (v6 ? IPAddress("2001:db8:ff::\(round + 1)")! : IPAddress(v4: 198, 19, UInt8(round), 7))
                    let cport = UInt16(32768 + rng.below(28000))
                    let isn = UInt32(truncatingIfNeeded: rng.next())
                    let tfo = rng.below(3) == 0 ? 10 : 0
                    var syn = FrameSpec(source: client, destination: remote, sourcePort: cport, destinationPort: 443,
                                        flags: .syn, sequence: isn)
                    if tfo > 0 { syn.payload = .bytes(Array(repeating: 0x61, count: tfo)) }
                    shape.apply(&syn)
                    func reply(_ flags: TCPFlags, ack: UInt32, port: UInt16 = 0) -> FrameSpec {
                        var s = FrameSpec(source: remote, destination: client, sourcePort: 443,
                                          destinationPort: port == 0 ? cport : port, flags: flags,
                                          sequence: UInt32(truncatingIfNeeded: rng.next()), acknowledgment: ack)
                        shape.apply(&s)
                        return s
                    }
                    let sendSyn = rng.below(6) != 0
                    var packets: [(FrameSpec, BPFPrograms.Program)] = []
                    if sendSyn { packets.append((syn, .synRecord)) }
                    let right = isn &+ 1 &+ (rng.below(2) == 0 ? UInt32(tfo) : 0)
                    packets.append((reply([.syn, .ack], ack: right &+ (rng.below(4) == 0 ? 1 : 0)), .synackCheck))
                    packets.append((reply([.syn, .ack], ack: right), .synackCheck))
                    packets.append((reply([.syn, .ack], ack: isn &+ 1, port: cport &+ 1), .synackCheck))
                    packets.append((reply([.rst, .ack], ack: isn &+ 1, port: cport &+ 2), .synackCheck))
                    for (spec, program) in packets {
                        let n = FrameBuilder.build(spec, into: &frame)
                        var bytes = Array(frame.prefix(n))
                        // A first fragment (more fragments follow): the nft `fragments` chain judges it.
                        if shape == .ipv4Fragment { bytes[14 + 6] |= 0x20 }
                        let xdp = try bpf.testRun(program, frame: bytes)
                        clock += 1_000_000
                        let d = engine.decide(PacketParser.parse(bytes, link: .ethernet), at: clock)
                        let isSynack = spec.flags == [.syn, .ack]
                        let toArmed = armed.contains(spec.destination)
                        let where_ = "\(shape) v6=\(v6) round \(round) \(program.rawValue) flags=\(spec.flags.rawValue) dst=\(spec.destination) ack=\(spec.acknowledgment) engine=\(d.reason.rawValue)"
                        #expect(xdp == BPFPrograms.xdpPass || xdp == BPFPrograms.xdpDrop, "\(where_): verdict \(xdp)")
                        if xdp == BPFPrograms.xdpDrop {
                            xdpDrops += 1
                            // Never a drop the engine would not make.
                            #expect(d.verdict == .drop, "\(where_): XDP dropped what the engine accepts")
                        }
                        if d.verdict == .drop { engineDrops += 1 }
                        if program == .synackCheck && isSynack && toArmed && shape.walked {
                            #expect((xdp == BPFPrograms.xdpDrop) == (d.verdict == .drop), "\(where_): XDP \(xdp)")
                            compared += 1
                        } else if !shape.walked || !isSynack || !toArmed {
                            #expect(xdp == BPFPrograms.xdpPass, "\(where_): must pass, got \(xdp)")
                            if !shape.walked { passedUnwalked += 1 }
                        }
                    }
                }
            }
        }
        // Both outcomes were exercised, on enough packets to mean something.
        #expect(compared > 200 && xdpDrops > 50 && engineDrops > xdpDrops && passedUnwalked > 50,
                "compared \(compared), XDP drops \(xdpDrops), engine drops \(engineDrops), passed unwalked \(passedUnwalked)")
        let counts = try bpf.counters()
        #expect(counts[.synackUnsolicited] == UInt64(xdpDrops))
        #expect((counts[.synackSolicited] ?? 0) > 20 && (counts[.allowlisted] ?? 0) > 0 && (counts[.notArmed] ?? 0) > 0
                    && (counts[.unparsed] ?? 0) > 0 && (counts[.synRecorded] ?? 0) > 50, "\(counts)")
    }

    /// An armed entry whose time ran out stops dropping: a killed agent's prefixes disarm alone.
    @Test func expiredArmingPasses() throws {
        guard let bpf = Self.loadPrograms() else { return }
        try bpf.setPrefixes("protected", [CIDR("198.18.2.0/24")!])
        var frame: [UInt8] = []
        let spec = FrameSpec(source: IPAddress(v4: 198, 19, 0, 1), destination: IPAddress(v4: 198, 18, 2, 9),
                             sourcePort: 443, destinationPort: 40000, flags: [.syn, .ack], sequence: 1, acknowledgment: 2)
        let n = FrameBuilder.build(spec, into: &frame)
        let armedAt = Date()
        try bpf.arm(CIDR("198.18.2.0/24")!, timeout: 1)
        let first = try bpf.testRun(.synackCheck, frame: Array(frame.prefix(n)))
        // Dropping while armed is only asked of a check that ran inside the second: a loaded
        // machine can stall a test longer than that.
        if Date().timeIntervalSince(armedAt) < 1 {
            #expect(first == BPFPrograms.xdpDrop)
        } else {
            print("note: the armed check ran after the entry's second; not judged")
        }
        // Passing once the time ran out: polled, 10 s at most, not slept on.
        let deadline = Date().addingTimeInterval(10)
        var last = first
        while last != BPFPrograms.xdpPass && Date() < deadline {
            usleep(50_000)
            last = try bpf.testRun(.synackCheck, frame: Array(frame.prefix(n)))
        }
        #expect(last == BPFPrograms.xdpPass)
    }

    /// The embedded object was built from Sources/CBPF/reflectguard.bpf.c as they are now (scripts/embed-bpf.sh),
    /// and, where clang-14 and bpftool are installed, rebuilding gives the same bytes.
    @Test func embeddedObjectIsCurrent() throws {
        let root = TestEnvironment.packageDirectory.path
        let header = try String(contentsOfFile: root + "/Sources/CBPF/rg_bpf_object.h", encoding: .utf8)
        let recorded = header.split(separator: "\n").first { $0.hasPrefix("#define RG_BPF_SOURCE_SHA256") }?
            .split(separator: "\"").dropFirst().first.map(String.init)
        let sum = try TestEnvironment.run("/bin/sh", ["-c", "cat '\(root)/Sources/CBPF/reflectguard.bpf.c' '\(root)/Sources/CBPF/rg_bpf_maps.h' | sha256sum"])
        #expect(recorded != nil && sum.out.hasPrefix(recorded!), "run scripts/embed-bpf.sh after editing Sources/CBPF/reflectguard.bpf.c or rg_bpf_maps.h")
        guard TestEnvironment.which("clang-14") != nil, TestEnvironment.which("bpftool") != nil else {
            TestEnvironment.unavailable("clang-14 and bpftool (scripts/setup.sh) to rebuild the BPF object")
            return
        }
        let out = TestEnvironment.temporaryPath("rg_bpf_object.h")
        let r = try TestEnvironment.run(root + "/scripts/embed-bpf.sh", [out])
        #expect(r.status == 0, "\(r.err)")
        let rebuilt = try String(contentsOfFile: out, encoding: .utf8)
        #expect(rebuilt == header, "the embedded BPF object differs from a rebuild: run scripts/embed-bpf.sh")
    }
}
