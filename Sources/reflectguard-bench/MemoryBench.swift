#if canImport(Glibc)
import Glibc
#endif
import PacketParser
import VerdictEngine

/// `reflectguard-bench memory`: the engine's resident size with 1M tracked SYNs (EngineBench's
/// figure, measured first in a fresh process so nothing else is resident), then an engine under
/// 10M distinct spoofed tuples, SYN-ACKs and RSTs from random forged sources to random hosts of
/// the protected prefixes, with legitimate handshakes interleaved: resident memory must stay
/// flat once the tables are allocated, and every legitimate SYN-ACK must still be accepted.
enum MemoryBench {
    static func run() {
        EngineBench.memory()
        flood()
    }

    /// Packets of the flood; one legitimate handshake starts every `legitEvery` packets.
    static let floodPackets = 10_000_000
    static let legitEvery = 64
    /// Packet time between two packets: 1 µs, a 1 Mpps flood, so the 10M tuples span 10 s and the
    /// rate limiters and horizons see realistic time.
    static let packetGapNs: Nanoseconds = 1000
    /// A legitimate SYN-ACK comes back this many packets (µs) after its SYN: a 20 ms round trip.
    static let rttPackets = 20_000

    static func flood() {
        var policy = Policy()
        policy.protected.insert(CIDR("198.18.2.0/24")!)
        policy.protected.insert(CIDR("2001:db8:2::/64")!)
        let rssStart = EngineBench.rssKiB()
        let engine = Engine(policy: policy, seed: 0xf100d)
        let rssEngine = EngineBench.rssKiB()

        var rng: UInt64 = 0x5eed_f100d
        @inline(__always) func next() -> UInt64 {
            // xorshift64*: cheap enough not to dominate the engine's own work.
            rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27
            return rng &* 2685821657736338717
        }
        func v6(_ prefix: (UInt8, UInt8), _ hi: UInt64, _ lo: UInt64) -> IPAddress {
            var b = SIMD16<UInt8>()
            b[0] = 0x20; b[1] = 0x01; b[2] = 0x0d; b[3] = 0xb8; b[4] = prefix.0; b[5] = prefix.1
            for i in 0..<2 { b[6 + i] = UInt8(truncatingIfNeeded: hi >> (8 * UInt64(i))) }
            for i in 0..<8 { b[8 + i] = UInt8(truncatingIfNeeded: lo >> (8 * UInt64(i))) }
            return IPAddress(bytes: b)
        }

        // Legitimate handshakes waiting for their answer: (due packet index, the answer).
        var pending: [(due: Int, answer: ParsedPacket)] = []
        pending.reserveCapacity(rttPackets / legitEvery + 16)
        var pendingHead = 0
        var legitSynacks = 0, legitSynacksAccepted = 0
        var legitRefusals = 0, legitRefusalsAccepted = 0
        var legitSyns = 0, legitSynsAccepted = 0
        var spoofedSynacks = 0, spoofedSynacksDropped = 0
        var spoofedRsts = 0, spoofedRstsDropped = 0
        var samples: [(packets: Int, rssKiB: Int)] = []

        var p = ParsedPacket()
        p.hasTCP = true; p.ipProtocol = 6
        let start = EngineBench.now()
        var clock: Nanoseconds = 1_700_000_000_000_000_000
        var i = 0
        while i < floodPackets {
            clock &+= packetGapNs
            // Answers that are due go first, at their own time.
            while pendingHead < pending.count && pending[pendingHead].due <= i {
                let a = pending[pendingHead].answer
                pendingHead += 1
                let d = engine.decide(a, at: clock)
                if a.flags.isRST {
                    legitRefusals += 1; if d.verdict == .accept { legitRefusalsAccepted += 1 }
                } else {
                    legitSynacks += 1; if d.verdict == .accept { legitSynacksAccepted += 1 }
                }
            }
            if pendingHead > 4096 && pendingHead * 2 > pending.count {
                pending.removeFirst(pendingHead); pendingHead = 0
            }
            let r = next()
            let isV6 = r & 7 == 0
            if i % legitEvery == 0 {
                // A protected client opens a connection to a server outside; 1 in 8 is refused.
                let client = isV6 ? v6((0, 2), 0, next() & 0xffff) : IPAddress(v4: 198, 18, 2, UInt8(truncatingIfNeeded: 2 + next() % 250))
                let server = isV6 ? v6((0, 1), 0, next() & 0xffff) : IPAddress(v4: 203, 0, 113, UInt8(truncatingIfNeeded: next()))
                let cport = UInt16(32768 + next() % 28000), isn = UInt32(truncatingIfNeeded: next())
                var syn = p
                syn.network = isV6 ? .ipv6 : .ipv4
                syn.source = client; syn.destination = server
                syn.sourcePort = cport; syn.destinationPort = 443
                syn.flags = .syn; syn.sequence = isn; syn.acknowledgment = 0
                syn.optionSignature = TCPOptionSignature(rawValue: 1460 | (8 << 16) | (7 << 20))
                legitSyns += 1
                if engine.decide(syn, at: clock).verdict == .accept { legitSynsAccepted += 1 }
                var answer = syn
                answer.source = server; answer.destination = client
                answer.sourcePort = 443; answer.destinationPort = cport
                answer.acknowledgment = isn &+ 1
                answer.sequence = UInt32(truncatingIfNeeded: next())
                answer.flags = r & 0x38 == 0 ? [.rst, .ack] : [.syn, .ack]
                if answer.flags.isRST { answer.sequence = 0 }
                pending.append((i + rttPackets, answer))
            } else {
                // A spoofed tuple: a reflector's SYN-ACK or a forged RST, from a random forged
                // source and port to a random host and port of the protected prefixes.
                var f = p
                f.network = isV6 ? .ipv6 : .ipv4
                let src = next(), dst = next()
                f.source = isV6 ? v6((0, 0xff), src >> 48, src) : IPAddress(v4: 198, 19, UInt8(truncatingIfNeeded: src >> 8), UInt8(truncatingIfNeeded: src))
                f.destination = isV6 ? v6((0, 2), 0, dst) : IPAddress(v4: 198, 18, 2, UInt8(truncatingIfNeeded: dst))
                f.sourcePort = UInt16(truncatingIfNeeded: src >> 16)
                f.destinationPort = UInt16(truncatingIfNeeded: dst >> 16)
                f.sequence = UInt32(truncatingIfNeeded: dst >> 32)
                let rst = r & 0x300 == 0
                f.flags = rst ? .rst : [.syn, .ack]
                f.acknowledgment = rst ? 0 : UInt32(truncatingIfNeeded: src >> 20)
                f.optionSignature = rst ? .none : TCPOptionSignature(rawValue: 1460)
                let d = engine.decide(f, at: clock)
                if rst {
                    spoofedRsts += 1; if d.verdict == .drop { spoofedRstsDropped += 1 }
                } else {
                    spoofedSynacks += 1; if d.verdict == .drop { spoofedSynacksDropped += 1 }
                }
            }
            i += 1
            if i % 1_000_000 == 0 {
                samples.append((i, EngineBench.rssKiB()))
                // The inline agent drains attack events every batch; do the same.
                _ = engine.drainAttackEvents()
            }
        }
        let cpu = Double(EngineBench.now() - start) / 1e9
        let s = engine.stats
        let peak = samples.map(\.rssKiB).max() ?? 0
        let atOneM = samples.first?.rssKiB ?? 0
        print("memory flood: \(floodPackets) packets in \(EngineBench.format(cpu)) s CPU "
              + "(\(EngineBench.format(Double(floodPackets) / cpu / 1e6)) Mpps incl. generation); "
              + "\(spoofedSynacks) spoofed SYN-ACKs, \(spoofedRsts) spoofed RSTs, \(legitSyns) legit handshakes")
        print("memory flood RSS (MiB) every 1M packets: "
              + samples.map { "\($0.rssKiB / 1024)" }.joined(separator: " ")
              + " (process before the engine \(rssStart / 1024), after allocating it \(rssEngine / 1024))")
        print("memory flood tables: \(s.flowEntries) tracked flows (\(s.flowEvictions) evicted), "
              + "\(s.bucketEntries) RST/backscatter buckets (\(s.bucketEvictions) evicted), \(s.activeAttacks) active attacks")
        print("memory flood verdicts: legit SYN-ACKs accepted \(legitSynacksAccepted)/\(legitSynacks), "
              + "legit refusals (RST ack=ISN+1) accepted \(legitRefusalsAccepted)/\(legitRefusals), legit SYNs accepted \(legitSynsAccepted)/\(legitSyns), "
              + "spoofed SYN-ACKs dropped \(spoofedSynacksDropped)/\(spoofedSynacks), spoofed RSTs dropped \(spoofedRstsDropped)/\(spoofedRsts)")
        let growth = peak - atOneM
        let bounded = growth * 1024 < 16 << 20   // < 16 MiB growth from 1M to 10M packets
        let legitOK = legitSynacksAccepted == legitSynacks && legitRefusalsAccepted == legitRefusals
        print("memory flood target: RSS bounded \(bounded ? "met" : "NOT met") (grew \(growth / 1024) MiB from 1M to 10M packets, "
              + "peak \(peak / 1024) MiB); legit accepted \(legitOK ? "met" : "NOT met")")
    }
}
