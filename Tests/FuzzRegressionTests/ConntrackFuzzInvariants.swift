// The invariants one ctnetlink fuzz input must keep, shared by the libFuzzer target
// (Fuzz/ConntrackFuzz.swift, built by `scripts/fuzz.sh conntrack`, which compiles this very file)
// and the regression test that replays Fuzz/corpus-conntrack. Plain Swift over the public API of
// Conntrack's message reader and VerdictEngine: no Testing, no Foundation.
import PacketParser
import VerdictEngine
import Conntrack

/// A fuzz input is the bytes of one receive from a ctnetlink socket (a dump's replies, events,
/// NLMSG_DONE, NLMSG_ERROR), exactly what `ConntrackSocket.receive` hands the reader. Under
/// `state = conntrack` with conntrackd replicating, part of what the kernel reports was decided by
/// another router, so the reader must take any bytes.
public enum ConntrackFuzzInvariants {
    static let afInet: UInt8 = 2
    static let afInet6: UInt8 = 10

    /// Runs every check over one input; returns what failed (empty when all held).
    public static func check(_ input: UnsafeRawBufferPointer) -> [String] {
        var failures: [String] = []
        var results: [ConntrackMessage.Parsed] = []
        ConntrackMessage.forEach(in: input) { results.append($0) }

        // 1. The walk splits the receive at the netlink lengths: each message copied alone (into
        //    an allocation of exactly its size, so a read past it is an ASan report) and at an odd
        //    address reads the same.
        let bytes = Array(input)
        var alone: [ConntrackMessage.Parsed] = []
        var families: [UInt8?] = []
        var off = 0
        while bytes.count - off >= 16 {
            let len = Int(UInt32(bytes[off]) | UInt32(bytes[off + 1]) << 8 | UInt32(bytes[off + 2]) << 16
                          | UInt32(bytes[off + 3]) << 24)
            guard len >= 16, len <= bytes.count - off else { alone.append(.malformed); families.append(nil); break }
            let one = Array(bytes[off..<(off + len)])
            alone.append(one.withUnsafeBytes { ConntrackMessage.parse($0) })
            families.append(len > 16 ? one[16] : nil)
            let shifted = [0] + one
            let odd = shifted.withUnsafeBytes { ConntrackMessage.parse(UnsafeRawBufferPointer(rebasing: $0[1...])) }
            if odd != alone.last! { failures.append("message at \(off): \(alone.last!) aligned, \(odd) at an odd address") }
            off += (len + 3) & ~3
        }
        if results != alone {
            failures.append("the walk gave \(results.count) results, the messages alone \(alone.count): \(results) vs \(alone)")
            return failures
        }

        // 2. Every fact: one address family, the one its nfgenmsg names (the kernel keys a conntrack
        //    entry by one family; a tuple mixing them is not an entry), and it survives being
        //    written back as a message and read again.
        for (r, family) in zip(results, families) {
            guard case .fact(let f) = r else { continue }
            let v4 = f.source.isIPv4Mapped
            if f.destination.isIPv4Mapped != v4 {
                failures.append("fact mixes families: \(f.source) -> \(f.destination)")
            }
            if family != (v4 ? afInet : afInet6) {
                failures.append("fact of \(v4 ? "IPv4" : "IPv6") addresses in a message of family \(family.map(String.init) ?? "none")")
            }
            let again = encode(f).withUnsafeBytes { ConntrackMessage.parse($0) }
            if again != r { failures.append("fact \(f) written back reads as \(again)") }
        }

        // 3. The engine mirrors the facts about protected flows exactly: a model keyed by the
        //    unordered flow, no eviction (the table is larger than an input can fill).
        let engine = Engine(policy: policy, seed: 0xc0_7e57)
        var model = Set<[UInt8]>()
        for r in results {
            guard case .fact(let f) = r else { continue }
            _ = engine.learn(f, at: 1_000_000_000)
            guard policy.protected.contains(f.source) || policy.protected.contains(f.destination) else { continue }
            let a = octets(f.source) + [UInt8(f.sourcePort >> 8), UInt8(f.sourcePort & 0xff)]
            let b = octets(f.destination) + [UInt8(f.destinationPort >> 8), UInt8(f.destinationPort & 0xff)]
            let key = a.lexicographicallyPrecedes(b) ? a + b : b + a
            if f.kind == .present { model.insert(key) } else { model.remove(key) }
        }
        if engine.conntrackEntries != model.count {
            failures.append("engine mirrors \(engine.conntrackEntries) conntrack entries, the facts leave \(model.count)")
        }
        return failures
    }

    static func octets(_ a: IPAddress) -> [UInt8] { (0..<16).map { a.bytes[$0] } }

    /// Protected networks that the seeds' loopback flows (127.0.0.0/8, ::1) and the lab's fall in.
    static let policy: Policy = {
        var p = Policy()
        p.protected = PrefixSet([CIDR("127.0.0.0/8")!, CIDR("::1/128")!, CIDR("198.18.2.0/24")!, CIDR("2001:db8:2::/64")!])
        p.stateSource = .conntrack
        p.conntrackTableCapacity = 1024
        // Small tables: each input builds a fresh engine, and the default 1M-entry flow table
        // would be most of an execution's time.
        p.synTableCapacity = 64
        return p
    }()

    /// A fact as the kernel would send it: an event (NEW or DESTROY) with the original tuple and
    /// the TCP state, attributes nested as nfnetlink_conntrack.h lays them out.
    public static func encode(_ f: ConntrackFact) -> [UInt8] {
        func attribute(_ type: UInt16, _ payload: [UInt8], nested: Bool = false) -> [UInt8] {
            let t = type | (nested ? 0x8000 : 0)
            var out = [UInt8(truncatingIfNeeded: 4 + payload.count), UInt8(truncatingIfNeeded: (4 + payload.count) >> 8),
                       UInt8(t & 0xff), UInt8(t >> 8)] + payload
            out += [UInt8](repeating: 0, count: (4 - out.count % 4) % 4)
            return out
        }
        let v4 = f.source.isIPv4Mapped
        let ip = v4
            ? attribute(1, Array(octets(f.source)[12...])) + attribute(2, Array(octets(f.destination)[12...]))
            : attribute(3, octets(f.source)) + attribute(4, octets(f.destination))
        let proto = attribute(1, [6]) + attribute(2, [UInt8(f.sourcePort >> 8), UInt8(f.sourcePort & 0xff)])
            + attribute(3, [UInt8(f.destinationPort >> 8), UInt8(f.destinationPort & 0xff)])
        let tuple = attribute(1, attribute(1, ip, nested: true) + attribute(2, proto, nested: true), nested: true)
        let state = attribute(4, attribute(1, attribute(1, [f.state.rawValue]), nested: true), nested: true)
        let body = [v4 ? afInet : afInet6, 0, 0, 0] + tuple + state
        let type: UInt16 = f.kind == .present ? 0x100 : 0x102
        let length = 16 + body.count
        return [UInt8(length & 0xff), UInt8(length >> 8), 0, 0, UInt8(type & 0xff), UInt8(type >> 8)]
            + [UInt8](repeating: 0, count: 10) + body
    }
}
