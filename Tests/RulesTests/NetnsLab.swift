import Foundation
import Synchronization
import TestSupport

/// Runs programs for the network-namespace tests: root, `ip`, `nft`, iptables-nft and the built
/// `reflectguard` binary. Every namespace is named `rgt-rules-…` and deleted again, also when a
/// test fails.
enum NetnsLab {
    /// Nil when everything the namespace tests need is there, else why not.
    static var missing: String? {
        if geteuid() != 0 { return "network-namespace tests need root" }
        for tool in ["ip", "nft", "iptables-nft", "ip6tables-nft"] where TestEnvironment.which(tool) == nil {
            return "\(tool) is not installed"
        }
        if TestEnvironment.binary == nil { return "the reflectguard binary is not built (set REFLECTGUARD_BIN)" }
        return nil
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs argv (no shell), waiting at most `timeout` seconds.
    @discardableResult
    static func run(_ argv: [String], timeout: Double = 60) -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestEnvironment.which(argv[0]) ?? argv[0])
        p.arguments = Array(argv.dropFirst())
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { return Output(status: -1, stdout: "", stderr: "\(argv[0]): \(error)") }
        // Read while it runs: a full pipe would block the child.
        final class Box: Sendable { let data = Mutex(Data()) }
        let o = Box(), e = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { let d = out.fileHandleForReading.readDataToEndOfFile(); o.data.withLock { $0 = d }; group.leave() }
        group.enter()
        DispatchQueue.global().async { let d = err.fileHandleForReading.readDataToEndOfFile(); e.data.withLock { $0 = d }; group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning {
            p.terminate()
            // A child stuck where SIGTERM waits (a handler that never runs) must not hang the test.
            let grace = Date().addingTimeInterval(5)
            while p.isRunning && Date() < grace { usleep(10_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        group.wait()
        return Output(status: p.terminationStatus, stdout: o.data.withLock { String(decoding: $0, as: UTF8.self) },
                      stderr: e.data.withLock { String(decoding: $0, as: UTF8.self) })
    }

    /// A set of namespaces that exist for one test.
    /// Tests name namespaces by role (`rgt-rules-probe`); the kernel's names carry this process's
    /// id as well, so two test runs on one machine (CI beside a developer's run) never meet in,
    /// or delete, each other's namespaces.
    final class Namespaces: Sendable {
        let names: [String]

        init(_ names: [String]) throws {
            self.names = names
            for n in names {
                let k = Self.kernelName(n)
                run(["ip", "netns", "del", k])   // a leftover of an interrupted run
                let r = run(["ip", "netns", "add", k])
                guard r.status == 0 else { throw LabError("ip netns add \(k): \(r.stderr)") }
                run(["ip", "netns", "exec", k, "ip", "link", "set", "lo", "up"])
            }
        }

        deinit { for n in names { run(["ip", "netns", "del", Self.kernelName(n)]) } }

        static func kernelName(_ name: String) -> String { "\(name)-\(getpid())" }

        @discardableResult
        func exec(_ ns: String, _ argv: [String], timeout: Double = 60) -> Output {
            run(["ip", "netns", "exec", Self.kernelName(ns)] + argv, timeout: timeout)
        }

        /// Runs and requires success.
        @discardableResult
        func must(_ ns: String, _ argv: [String]) throws -> Output {
            let r = exec(ns, argv)
            guard r.status == 0 else {
                throw LabError("\(ns): \(argv.joined(separator: " ")) → \(r.status): \(r.stderr)\(r.stdout)")
            }
            return r
        }

        func reflectguard(_ ns: String, _ args: [String]) -> Output {
            exec(ns, [TestEnvironment.binary!] + args)
        }

        /// Joins two namespaces with a veth pair and addresses (v4 /24, v6 /64).
        func link(_ a: String, _ aIf: String, _ a4: String, _ a6: String,
                  _ b: String, _ bIf: String, _ b4: String, _ b6: String) throws {
            let tmpA = "rgtv\(UInt32.random(in: 0..<99999))a", tmpB = tmpA.dropLast() + "b"
            _ = run(["ip", "link", "del", tmpA])
            let r = run(["ip", "link", "add", tmpA, "type", "veth", "peer", "name", String(tmpB)])
            guard r.status == 0 else { throw LabError("veth: \(r.stderr)") }
            guard run(["ip", "link", "set", tmpA, "netns", Self.kernelName(a)]).status == 0,
                  run(["ip", "link", "set", String(tmpB), "netns", Self.kernelName(b)]).status == 0 else {
                _ = run(["ip", "link", "del", tmpA])
                throw LabError("moving veth into namespaces failed")
            }
            for (ns, tmp, name, v4, v6) in [(a, tmpA, aIf, a4, a6), (b, String(tmpB), bIf, b4, b6)] {
                try must(ns, ["ip", "link", "set", tmp, "name", name])
                try must(ns, ["sysctl", "-qw", "net.ipv6.conf.\(name).accept_dad=0"])
                try must(ns, ["ip", "addr", "add", v4 + "/24", "dev", name])
                try must(ns, ["ip", "-6", "addr", "add", v6 + "/64", "dev", name, "nodad"])
                try must(ns, ["ip", "link", "set", name, "up"])
            }
        }
    }

    /// Three namespaces of the lab plan: internet — router — protected, forwarding on, the
    /// forged reflector ranges routed to the internet side. rp_filter off: the point is to see
    /// what the router's rules do with spoofed sources.
    static func threeNamespaces(_ tag: String) throws -> Namespaces {
        let inet = "rgt-rules-\(tag)-i", router = "rgt-rules-\(tag)-r", prot = "rgt-rules-\(tag)-p"
        let n = try Namespaces([inet, router, prot])
        try n.link(inet, "up0", "198.18.1.2", "2001:db8:1::2", router, "out0", "198.18.1.1", "2001:db8:1::1")
        try n.link(router, "in0", "198.18.2.1", "2001:db8:2::1", prot, "eth0", "198.18.2.2", "2001:db8:2::2")
        for ns in [inet, router, prot] {
            try n.must(ns, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])
            try n.must(ns, ["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"])
        }
        try n.must(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        try n.must(router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        try n.must(inet, ["ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.1"])
        try n.must(inet, ["ip", "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::1"])
        try n.must(prot, ["ip", "route", "add", "default", "via", "198.18.2.1"])
        try n.must(prot, ["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1"])
        try n.must(router, ["ip", "route", "add", "198.19.0.0/16", "via", "198.18.1.2"])
        try n.must(router, ["ip", "-6", "route", "add", "2001:db8:ff::/48", "via", "2001:db8:1::2"])
        // The internet side answers for the forged ranges too, so replies would have a way back.
        try n.must(inet, ["ip", "route", "add", "198.19.0.0/16", "dev", "lo"])
        return n
    }

    /// A raw-socket TCP sender (bounded count): crafts headers with any source, so forged
    /// reflector SYN-ACKs can be sent from the internet namespace. Python, because the lab tools
    /// here (hping3) have no IPv6.
    static let senderScript = #"""
        import socket, struct, sys, random
        def csum(b):
            if len(b) % 2: b += b'\0'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return (~s) & 0xffff
        fam, src, dst, sport, dport, flags, count = sys.argv[1:8]
        count = int(count); sport = int(sport); dport = int(dport)
        fl = int(flags, 0) if flags[0].isdigit() else {'S': 2, 'SA': 0x12, 'R': 4, 'RA': 0x14, 'A': 0x10}[flags]
        rnd = random.Random(7)
        v6 = fam == '6'
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for i in range(count):
            sp = sport or rnd.randrange(1024, 65535)
            dp = dport or rnd.randrange(32768, 61000)
            srcaddr = src if '*' not in src else src.replace('*', '%x' % rnd.randrange(1, 65535) if v6 else str(rnd.randrange(1, 255)))
            tcp = struct.pack('!HHIIBBHHH', sp, dp, rnd.getrandbits(32), rnd.getrandbits(32) if fl & 0x10 else 0, 5 << 4, fl, 64240, 0, 0)
            if v6:
                sa = socket.inet_pton(socket.AF_INET6, srcaddr); da = socket.inet_pton(socket.AF_INET6, dst)
                pseudo = sa + da + struct.pack('!I3xB', len(tcp), 6)
                tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
                pkt = struct.pack('!IHBB', 6 << 28, len(tcp), 6, 64) + sa + da + tcp
                s.sendto(pkt, (dst, 0))
            else:
                sa = socket.inet_aton(srcaddr); da = socket.inet_aton(dst)
                pseudo = sa + da + struct.pack('!BBH', 0, 6, len(tcp))
                tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
                ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, sa, da)
                s.sendto(ip + tcp, (dst, 0))
        """#

    static func script(_ name: String, _ text: String) throws -> String {
        let path = TestEnvironment.temporaryPath("rgt-rules-\(name).py")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

struct LabError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
