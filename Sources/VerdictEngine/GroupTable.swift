#if canImport(_Builtin_intrinsics.intel)
import _Builtin_intrinsics.intel
#endif
import PacketParser

/// A slot of a `GroupTable`: a plain value (no references) that knows its key and when it was last
/// touched, in packet milliseconds.
protocol TableSlot {
    associatedtype Key
    func hasKey(_ key: Key) -> Bool
    var lastSeen: UInt32 { get }
    /// The hash of the slot's own key (the same the owner passes for it), to move it.
    func hash(_ seed: KeyedHash) -> UInt64
}

/// One bit per lane, set where the lane of `mask` is true: a single `pmovmskb` on x86_64.
@inline(__always)
func laneBits(_ mask: SIMDMask<SIMD16<Int8>>) -> UInt32 {
    let lanes = unsafeBitCast(mask, to: SIMD16<Int8>.self)
    #if canImport(_Builtin_intrinsics.intel)
    return UInt32(truncatingIfNeeded: _mm_movemask_epi8(unsafeBitCast(lanes, to: __m128i.self)))
    #else
    // Portable fallback: gather the top bit of each byte with one multiply per half.
    let halves = unsafeBitCast(lanes, to: SIMD2<UInt64>.self)
    let lo = ((halves[0] & 0x8080_8080_8080_8080) &* 0x0002_0408_1020_4081) >> 56
    let hi = ((halves[1] & 0x8080_8080_8080_8080) &* 0x0002_0408_1020_4081) >> 56
    return UInt32(truncatingIfNeeded: lo | hi << 8)
    #endif
}

/// Packet-time age in milliseconds. A timestamp up to `ageFutureSlackMs` in the future (captures
/// are not always monotonic, merged ones step back seconds) counts as age 0; any other gap past
/// 2^31 ms is a slot idle for 24.8 days or more, and counts as the oldest possible (`UInt32.max`),
/// so it expires, is evicted first, and its bucket refills (it once read as 0: fresh forever).
/// Times are 32-bit ms, so a gap of a whole multiple of ~49.7 days still aliases to a small one.
@inline(__always)
func age(_ now: UInt32, since then: UInt32) -> UInt32 {
    let d = now &- then
    guard Int32(bitPattern: d) < 0 else { return d }
    return d >= 0 &- ageFutureSlackMs ? 0 : .max
}

/// How far back packet time may step (reordering, merged captures) and still read as "now":
/// about 70 minutes.
let ageFutureSlackMs: UInt32 = 1 << 22

/// A fixed-capacity hash table in the SwissTable family, bounded by construction.
///
/// Slots come in groups of 16 with one tag byte each, kept apart in a `SIMD16<UInt8>` per group:
/// one broadcast, one `pcmpeqb` and one `pmovmskb` find the candidate slots of a group. Every key
/// has two candidate groups and lives in one of them, so a lookup reads at most two tag vectors
/// (the second only when the first has overflowed into it), a delete never needs a tombstone,
/// and no probe sequence can grow: the worst case is fixed whatever the traffic. The second
/// group takes what the first cannot, so the table fills to capacity before the first eviction: when both of a new key's groups are full,
/// one resident of them moves to its other group if that has room (one cuckoo step). Failing that, the oldest of
/// their 32 slots (by packet time) is evicted and counted, after first reusing any slot idle past
/// the caller's horizon: oldest-first within the key's neighbourhood, which is where a new key can go.
///
/// Memory is allocated once (the slots untouched until used, so the kernel maps pages lazily),
/// and nothing allocates afterwards. `~Copyable`: the table is its memory's only owner, which it
/// releases when it goes (`OwnedBuffer`).
struct GroupTable<Slot: TableSlot>: ~Copyable {
    static var emptyTag: UInt8 { 0x80 }

    let groupCount: Int
    /// Tags, then slots, in one mapping: `groupCount` tag vectors, then `groupCount * 16` slots
    /// (counted in 16-byte units, which every slot array fills exactly).
    private let memory: OwnedBuffer<SIMD16<UInt8>>
    var tags: UnsafeMutablePointer<SIMD16<UInt8>> { memory.base }
    /// The slots, inside `memory` (borrowed from it: valid while the table lives).
    let slots: UnsafeMutablePointer<Slot>
    /// [0] slots holding an entry (expired entries count until their slot is reused); [1] live
    /// entries pushed out because both of a new key's groups were full.
    private let counters: OwnedBuffer<Int>
    var count: Int { counters[0] }
    /// One bit per group: some key whose first group this is lives in its second group. A
    /// lookup reads the second group only then, so a key that is absent (every spoofed SYN-ACK)
    /// usually costs one tag line, not two. Sticky until `removeAll` (a stale bit only costs a
    /// probe); 8 KiB for a 1M table, so it stays in cache.
    private let overflow: OwnedBuffer<UInt64>

    @inline(__always) private func overflowed(_ g: Int) -> Bool { overflow[g >> 6] & (1 << UInt64(g & 63)) != 0 }
    @inline(__always) private func markOverflow(_ g: Int) { overflow[g >> 6] |= 1 << UInt64(g & 63) }
    var evictions: UInt64 { UInt64(counters[1]) }

    /// Room for `capacity` entries plus 1/8 slack, so a full table rarely evicts early.
    init(capacity: Int) {
        groupCount = Self.groupCount(capacity: capacity)
        memory = OwnedBuffer(mapping: groupCount * (1 + MemoryLayout<Slot>.stride))
        memory.base.initialize(repeating: SIMD16<UInt8>(repeating: Self.emptyTag), count: groupCount)
        slots = UnsafeMutableRawPointer(memory.base + groupCount).bindMemory(to: Slot.self, capacity: groupCount * 16)
        counters = OwnedBuffer(repeating: 0, count: 2)
        overflow = OwnedBuffer(repeating: 0, count: (groupCount + 63) / 64)
    }

    var mappedBytes: Int { groupCount * 16 + groupCount * 16 * MemoryLayout<Slot>.stride }

    static func groupCount(capacity: Int) -> Int {
        let wanted = max(16, capacity + capacity / 8)
        return (wanted + 15) / 16
    }

    /// What a table of `capacity` maps, without making one (Int.max when it would overflow): the
    /// agent checks that the tables fit before it changes anything in the kernel.
    static func mappedBytes(capacity: Int) -> Int {
        guard capacity < Int.max / 2 else { return .max }
        let (bytes, overflow) = groupCount(capacity: capacity).multipliedReportingOverflow(by: 16 + 16 * MemoryLayout<Slot>.stride)
        return overflow ? .max : bytes
    }

    /// Has the kernel back every page of the table now (`OwnedBuffer.populate`). Returns whether
    /// the kernel did.
    @discardableResult
    func prefault() -> Bool { memory.populate() }

    var slotCount: Int { groupCount * 16 }
    /// Bytes the table holds for its whole life.
    var allocatedBytes: Int { groupCount * (16 + 16 * MemoryLayout<Slot>.stride) }

    /// The two candidate groups and the 7-bit tag of a hash. The groups come from disjoint hash
    /// bits (high bits for the first, low bits rotated up for the second; multiply-high maps them
    /// onto any group count without a division), the tag from bits neither uses much.
    @inline(__always)
    func locate(_ hash: UInt64) -> (Int, Int, UInt8) {
        let n = UInt64(groupCount)
        let g1 = Int(truncatingIfNeeded: hash.multipliedFullWidth(by: n).high)
        let rotated = (hash << 32) | (hash >> 32)
        let g2 = Int(truncatingIfNeeded: rotated.multipliedFullWidth(by: n).high)
        let tag = UInt8(truncatingIfNeeded: hash >> 25) & 0x7f
        return (g1, g2, tag)
    }

    @inline(__always)
    private func findIn(group g: Int, tag: SIMD16<UInt8>, key: Slot.Key) -> Int {
        var m = laneBits(tags[g] .== tag)
        while m != 0 {
            let i = g &* 16 &+ m.trailingZeroBitCount
            if slots[i].hasKey(key) { return i }
            m &= m &- 1
        }
        return -1
    }

    /// The slot index holding `key`, or -1.
    @inline(__always)
    func find(_ key: Slot.Key, hash: UInt64) -> Int {
        let (g1, g2, tag) = locate(hash)
        let t = SIMD16<UInt8>(repeating: tag)
        let i = findIn(group: g1, tag: t, key: key)
        if i >= 0 || g2 == g1 || !overflowed(g1) { return i }
        return findIn(group: g2, tag: t, key: key)
    }

    /// Claims a slot for a key that is not in the table (the caller looked first) and returns its
    /// index; the caller writes the slot. Never fails: it reuses an expired slot or evicts.
    func claim(hash: UInt64, now: UInt32, idleLimit: UInt32, seed: KeyedHash) -> Int {
        let (g1, g2, tag) = locate(hash)
        let empty = SIMD16<UInt8>(repeating: Self.emptyTag)
        let e1 = laneBits(tags[g1] .== empty)
        if e1 != 0 {
            // The first group while it has room, so most lookups read one tag line.
            let lane = e1.trailingZeroBitCount
            tags[g1][lane] = tag
            counters[0] &+= 1
            return g1 &* 16 &+ lane
        }
        let e2 = g2 == g1 ? 0 : laneBits(tags[g2] .== empty)
        if e2 != 0 {
            markOverflow(g1)
            let lane = e2.trailingZeroBitCount
            tags[g2][lane] = tag
            counters[0] &+= 1
            return g2 &* 16 &+ lane
        }
        // Both groups full: move a resident to its other group, if one has room there.
        for pass in 0..<2 {
            let g = pass == 0 ? g1 : g2
            if pass == 1 && g2 == g1 { break }
            for lane in 0..<16 {
                let i = g &* 16 &+ lane
                let (a1, a2, _) = locate(slots[i].hash(seed))
                let other = a1 == g ? a2 : a1
                if other == g { continue }
                let free = laneBits(tags[other] .== empty)
                guard free != 0 else { continue }
                let to = other &* 16 &+ free.trailingZeroBitCount
                (slots + to).initialize(to: slots[i])
                tags[other][free.trailingZeroBitCount] = tags[g][lane]
                if other == a2 { markOverflow(a1) }
                tags[g][lane] = tag
                if g != g1 { markOverflow(g1) }
                counters[0] &+= 1
                return i
            }
        }
        // Still no room: reuse the oldest slot, which is also the one most likely expired.
        var victim = g1 &* 16
        var oldest: UInt32 = 0
        for pass in 0..<2 {
            let g = pass == 0 ? g1 : g2
            if pass == 1 && g2 == g1 { break }
            for lane in 0..<16 {
                let i = g &* 16 &+ lane
                let a = age(now, since: slots[i].lastSeen)
                if a >= oldest { oldest = a; victim = i }
            }
        }
        if oldest <= idleLimit { counters[1] &+= 1 }
        if victim / 16 != g1 { markOverflow(g1) }
        tags[victim / 16][victim % 16] = tag
        return victim
    }

    /// Frees a slot (no tombstone needed: a key's groups are fixed, not a probe sequence).
    func remove(at index: Int) {
        tags[index / 16][index % 16] = Self.emptyTag
        counters[0] &-= 1
    }

    /// Frees every slot.
    func removeAll() {
        tags.update(repeating: SIMD16<UInt8>(repeating: Self.emptyTag), count: groupCount)
        overflow.base.update(repeating: 0, count: overflow.count)
        counters[0] = 0
    }
}
