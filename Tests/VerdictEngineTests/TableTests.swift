#if canImport(Glibc)
import Glibc
#endif
import Testing
import PacketParser
@testable import VerdictEngine
import TestSupport

@Suite struct TableTests {
    @Test func entryIsOneCacheLine() {
        #expect(MemoryLayout<FlowEntry>.size == 64)
        #expect(MemoryLayout<FlowEntry>.stride == 64)
    }

    @Test func laneBitsMatchesScalar() {
        var g = SplitMix(state: 3)
        for _ in 0..<1000 {
            var v = SIMD16<UInt8>()
            for i in 0..<16 { v[i] = UInt8.random(in: 0...3, using: &g) }
            let m = laneBits(v .== SIMD16<UInt8>(repeating: 2))
            var want: UInt32 = 0
            for i in 0..<16 where v[i] == 2 { want |= 1 << i }
            #expect(m == want)
        }
    }

    /// `prefault` backs every page of a table, counted page by page with mincore: before it,
    /// the slots a fresh table has not touched are not resident.
    @Test func prefaultBacksEveryPageOfTheTable() throws {
        let t = GroupTable<FlowEntry>(capacity: 1 << 16)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (t.mappedBytes + page - 1) / page
        func resident() -> Int {
            var v = [UInt8](repeating: 0, count: pages)
            let rc = mincore(UnsafeMutableRawPointer(t.tags), t.mappedBytes, &v)
            return rc == 0 ? v.filter { $0 & 1 != 0 }.count : -1
        }
        let before = resident()
        #expect(before >= 0 && before < pages, "a fresh table is not all resident: \(before) of \(pages) pages")
        let populated = t.prefault()
        try #require(populated, "MADV_POPULATE_WRITE (Linux 5.14+)")
        #expect(resident() == pages)
    }

    static func syn(_ k: Int) -> ParsedPacket {
        tcp(src: "198.18.2.\(k % 200)", dst: "198.51.100.\(k / 60000 % 200)", sport: UInt16(1024 + k % 60000),
            dport: 443, flags: .syn, seq: UInt32(k))
    }

    static func answer(_ k: Int) -> ParsedPacket {
        tcp(src: "198.51.100.\(k / 60000 % 200)", dst: "198.18.2.\(k % 200)", sport: 443,
            dport: UInt16(1024 + k % 60000), flags: synack, seq: 1, ack: UInt32(k) &+ 1)
    }

    @Test func tableFullEvictsOldestAndStaysCorrect() {
        let capacity = 1024
        let e = Engine(policy: policy { $0.synTableCapacity = capacity }, seed: 1)
        let total = 4 * capacity
        for k in 0..<total { _ = e.decide(Self.syn(k), at: t(Double(k) * 0.001)) }
        let s = e.stats
        #expect(s.flowEntries <= s.flowSlots)
        #expect(s.flowEvictions >= UInt64(total - s.flowSlots))
        // The newest entries are all still there and answer correctly; the oldest are gone.
        for k in (total - capacity / 2)..<total {
            #expect(e.decide(Self.answer(k), at: t(5)).reason == .solicitedSynack)
        }
        var oldGone = 0
        for k in 0..<capacity / 2 where e.decide(Self.answer(k), at: t(5)).reason == .unsolicitedSynack { oldGone += 1 }
        #expect(oldGone == capacity / 2)
    }

    @Test func fillsBeforeEvicting() {
        let e = Engine(policy: policy { $0.synTableCapacity = 50_000 }, seed: 9)
        for k in 0..<50_000 { _ = e.decide(Self.syn(k), at: t(1)) }
        #expect(e.stats.flowEntries == 50_000)
        #expect(e.stats.flowEvictions == 0)
    }

    @Test func expiredEntriesAreReusedWithoutCountingEvictions() {
        let e = Engine(policy: policy { $0.synTableCapacity = 256; $0.synHorizon = 10 }, seed: 1)
        for k in 0..<1000 { _ = e.decide(Self.syn(k), at: t(1)) }
        let before = e.stats.flowEvictions
        for k in 1000..<1200 { _ = e.decide(Self.syn(k), at: t(100)) }
        #expect(e.stats.flowEvictions == before)
    }

    @Test(arguments: [UInt64(0), 1, 0xdead_beef, .max])
    func decisionsDoNotDependOnSeed(seed: UInt64) {
        let e = Engine(policy: policy(), seed: seed)
        var g = SplitMix(state: 11)
        for k in 0..<2000 {
            let s = UInt32.random(in: 0...UInt32.max, using: &g)
            let syn = tcp(src: "198.18.2.\(k % 250)", dst: "198.51.100.\(k % 7)", sport: UInt16(30000 + k), dport: 443, flags: .syn, seq: s)
            #expect(e.decide(syn, at: t(Double(k) * 0.0001)).reason == .synTracked)
            let ok = tcp(src: "198.51.100.\(k % 7)", dst: "198.18.2.\(k % 250)", sport: 443, dport: UInt16(30000 + k), flags: synack, seq: 1, ack: s &+ 1)
            let bad = tcp(src: "198.51.100.\(k % 7)", dst: "198.18.2.\(k % 250)", sport: 443, dport: UInt16(30000 + k), flags: synack, seq: 1, ack: s &+ 2)
            #expect(e.decide(bad, at: t(1)).reason == .unsolicitedSynack)
            #expect(e.decide(ok, at: t(1)).reason == .solicitedSynack)
        }
    }

    @Test func seedsPlaceKeysDifferently() {
        let a = KeyedHash(1), b = KeyedHash(2)
        var d = false
        var key = FlowKey(Self.syn(5), senderIs0: &d)
        #expect(key.hash(a) != key.hash(b))
        key.p0 &+= 1
        #expect(key.hash(a) != FlowKey(Self.syn(5), senderIs0: &d).hash(a))
    }

    @Test func bothDirectionsFindTheSameKey() {
        var s0 = false, s1 = false
        let k1 = FlowKey(Self.syn(7), senderIs0: &s0)
        let k2 = FlowKey(Self.answer(7), senderIs0: &s1)
        #expect(s0 != s1)
        #expect(k1.hash(KeyedHash(4)) == k2.hash(KeyedHash(4)))
    }
}
