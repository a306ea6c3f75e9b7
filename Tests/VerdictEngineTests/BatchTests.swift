import Testing
import PacketParser
@testable import VerdictEngine

@Suite struct BatchTests {
    /// The batch entry point only prefetches: its decisions are those of one-by-one calls.
    @Test func batchMatchesOneByOne() {
        var g = SplitMix(state: 77)
        var packets: [ParsedPacket] = [], times: [Nanoseconds] = [], sides: [Side] = []
        for k in 0..<3000 {
            let c = "198.18.2.\(Int.random(in: 1...20, using: &g))", s = "198.51.100.\(Int.random(in: 1...5, using: &g))"
            let cp = UInt16.random(in: 40000...40010, using: &g), isn = UInt32.random(in: 0...5, using: &g)
            let p: ParsedPacket
            switch Int.random(in: 0..<4, using: &g) {
            case 0: p = tcp(src: c, dst: s, sport: cp, dport: 443, flags: .syn, seq: isn)
            case 1: p = tcp(src: s, dst: c, sport: 443, dport: cp, flags: synack, seq: 9, ack: isn &+ 1)
            case 2: p = tcp(src: s, dst: c, sport: 443, dport: cp, flags: .rst, seq: 9)
            default: p = tcp(src: s, dst: c, sport: 443, dport: cp, flags: .ack, seq: 9)
            }
            packets.append(p); times.append(t(Double(k) * 0.01)); sides.append(k % 3 == 0 ? .outside : .unknown)
        }
        let one = Engine(policy: policy(), seed: 3), batch = Engine(policy: policy(), seed: 3)
        let expected = packets.indices.map { one.decideObserved(packets[$0], at: times[$0], side: sides[$0]) }
        var got = [Decision](repeating: Decision(.accept, .notQueued), count: packets.count)
        var k = 0
        while k < packets.count {
            let m = min(37, packets.count - k)
            packets.withUnsafeBufferPointer { pp in
                times.withUnsafeBufferPointer { tt in
                    sides.withUnsafeBufferPointer { ss in
                        got.withUnsafeMutableBufferPointer { out in
                            batch.decideObserved(batch: UnsafeBufferPointer(rebasing: pp[k..<(k + m)]),
                                                 at: UnsafeBufferPointer(rebasing: tt[k..<(k + m)]),
                                                 sides: UnsafeBufferPointer(rebasing: ss[k..<(k + m)]),
                                                 into: UnsafeMutableBufferPointer(rebasing: out[k..<(k + m)]))
                        }
                    }
                }
            }
            k += m
        }
        #expect(got == expected)
        #expect(one.stats == batch.stats)
    }
}
