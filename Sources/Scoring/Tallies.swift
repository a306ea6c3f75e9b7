import CPrefetch
import Foundation
import PacketParser
import VerdictEngine

/// Protected hosts that received dropped SYN-ACKs or RSTs, with how many distinct reflectors sent
/// them. Distinct reflectors are estimated with a 256-register HyperLogLog per victim (linear
/// counting below ~600, which is exact in practice for the handful a legit host sees), so a
/// carpet-bombed /16 costs 256 bytes a victim instead of a set of every reflector. The first
/// `capacity` victims are tracked; drops to later ones are only counted in `overflow`, so a
/// carpet over a whole IPv6 /64 (a new victim per packet) cannot grow memory without bound.
final class VictimTable {
    struct Stats {
        var address: IPAddress
        var synackDropped: UInt64 = 0
        var rstDropped: UInt64 = 0
        var registerOffset: Int
    }
    private static let registersPerVictim = 256
    let capacity: Int
    /// Drops to protected hosts that came after the table was full.
    @exclusivity(unchecked) private(set) var overflow: UInt64 = 0

    /// `hash` keys the address index (victims are addresses an attacker picks).
    init(capacity: Int, hash: KeyedHash) {
        self.capacity = capacity
        index = AddressIndex(hash: hash)
    }
    // Single-threaded per-drop state: see ScoringPipeline on @exclusivity(unchecked).
    let index: AddressIndex
    @exclusivity(unchecked) private var stats: [Stats] = []
    @exclusivity(unchecked) private var registers: [UInt8] = []

    var count: Int { stats.count }

    func prefetch(victim: IPAddress) { index.prefetch(AddressKey(victim)) }

    func add(victim: IPAddress, reflector: IPAddress, synack: Bool) {
        let i: Int
        let key = AddressKey(victim)
        if let known = index.find(key) { i = Int(known) } else {
            guard stats.count < capacity else { overflow &+= 1; return }
            i = stats.count
            index.insert(key, Int32(i))
            stats.append(Stats(address: victim, registerOffset: registers.count))
            registers.append(contentsOf: repeatElement(0, count: Self.registersPerVictim))
        }
        if synack { stats[i].synackDropped &+= 1 } else { stats[i].rstDropped &+= 1 }
        let h = Self.hash(reflector)
        let bucket = Int(h & 0xff)
        let rank = UInt8(min(56, (h >> 8).leadingZeroBitCount - 7) + 1)
        let at = stats[i].registerOffset + bucket
        if registers[at] < rank { registers[at] = rank }
    }

    func distinctReflectors(_ s: Stats) -> UInt64 {
        let m = Double(Self.registersPerVictim)
        var zeros = 0
        var sum = 0.0
        for r in registers[s.registerOffset..<(s.registerOffset + Self.registersPerVictim)] {
            if r == 0 { zeros += 1 }
            sum += 1 / Double(UInt64(1) << UInt64(r))
        }
        let raw = 0.7213 / (1 + 1.079 / m) * m * m / sum
        if raw <= 2.5 * m && zeros > 0 {
            return UInt64((m * log(m / Double(zeros))).rounded())
        }
        return UInt64(raw.rounded())
    }

    func top(_ n: Int) -> [VictimRow] {
        topByCount(stats, n, count: { $0.synackDropped + $0.rstDropped }, address: { $0.address }).map {
            VictimRow(address: $1, synackDropped: $0.synackDropped,
                      rstDropped: $0.rstDropped, reflectors: distinctReflectors($0))
        }
    }

    /// Dropped packets summed per /24 (IPv4) or /64 (IPv6), most first.
    func byPrefix(limit: Int) -> [(prefix: String, victims: Int, dropped: UInt64)] {
        var sums: [CIDR: (Int, UInt64)] = [:]
        for s in stats {
            let p = CIDR(address: s.address, length: s.address.isIPv4Mapped ? 120 : 64)
            let old = sums[p] ?? (0, 0)
            sums[p] = (old.0 + 1, old.1 + s.synackDropped + s.rstDropped)
        }
        return sums.map { (prefix: $0.key.description, victims: $0.value.0, dropped: $0.value.1) }
            .sorted { $0.dropped != $1.dropped ? $0.dropped > $1.dropped : $0.prefix < $1.prefix }
            .prefix(limit).map { $0 }
    }

    /// A 64-bit mix of the address (SplitMix64's finaliser over both halves): HLL needs the bits
    /// spread evenly, which neighbouring addresses are not. Unkeyed on purpose: the estimate is in
    /// the report, which must not change with the tables' seed, and the registers are no table an
    /// attacker can slow down (picking reflectors that collide only lowers an estimate).
    private static func hash(_ a: IPAddress) -> UInt64 {
        let v = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        return SplitMix64.mix(v[0] ^ (v[1] &* SplitMix64.golden))
    }
}

public struct VictimRow: Sendable {
    public var address: String
    public var synackDropped: UInt64
    public var rstDropped: UInt64
    public var reflectors: UInt64
}

/// Sources of dropped SYN-ACKs, counted exactly for the first `capacity` distinct addresses;
/// later newcomers are only counted in `overflow`, which bounds memory under a flood from millions
/// of reflectors (the top ones are seen early anyway, since they send the most).
final class ReflectorTable {
    let capacity: Int
    let index: AddressIndex
    @exclusivity(unchecked) private var keys: [AddressKey] = []
    @exclusivity(unchecked) private var counts: [UInt64] = []
    @exclusivity(unchecked) private(set) var overflow: UInt64 = 0

    /// `hash` keys the address index (reflector addresses are the attacker's pick, or spoofed).
    init(capacity: Int, hash: KeyedHash) {
        self.capacity = capacity
        index = AddressIndex(hash: hash)
    }

    var count: Int { counts.count }

    func prefetch(_ a: IPAddress) { index.prefetch(AddressKey(a)) }

    func add(_ a: IPAddress) {
        let key = AddressKey(a)
        if let i = index.find(key) { counts[Int(i)] &+= 1 }
        else if counts.count < capacity {
            index.insert(key, Int32(counts.count))
            keys.append(key)
            counts.append(1)
        } else { overflow &+= 1 }
    }

    func top(_ n: Int) -> [(address: String, synackDropped: UInt64)] {
        topByCount(Array(zip(keys, counts)), n, count: { $0.1 }, address: { $0.0.address })
            .map { (address: $1, synackDropped: $0.1) }
    }
}

/// Address → dense index, open addressing with linear probing and the keyed hash: `Dictionary`
/// runs SipHash over every key, and the victim and reflector lookups on each dropped packet were
/// ~15% of scoring an attack capture (perf). Keyed, because linear probing under an unkeyed hash
/// lets whoever picks the addresses (a carpet over a /64 has 2^64 to choose from) put them all on
/// one probe chain, and every lookup then walks it. Grows by doubling, kept at most half full;
/// never removes (victims and reflectors are kept for the report). What is stored where depends
/// on the seed; what the owners report (in insertion order, sorted) does not.
final class AddressIndex {
    private struct Slot { var key: AddressKey; var value: Int32 }
    @exclusivity(unchecked) private var slots: [Slot]
    @exclusivity(unchecked) private var mask: Int
    @exclusivity(unchecked) private(set) var count = 0
    private let keyedHash: KeyedHash

    init(hash: KeyedHash) {
        keyedHash = hash
        slots = Array(repeating: Slot(key: AddressKey(high: 0, low: 0), value: -1), count: 64)
        mask = 63
    }

    @inline(__always)
    private func hash(_ k: AddressKey) -> Int {
        Int(truncatingIfNeeded: keyedHash.hash(k.high, k.low))
    }

    /// How far the stored keys sit from their home slots (see `ProbeStatistics`).
    var probeStatistics: ProbeStatistics {
        var stats = ProbeStatistics()
        for (i, s) in slots.enumerated() where s.value >= 0 {
            stats.add(probes: ((i - hash(s.key)) & mask) + 1)
        }
        return stats
    }

    func find(_ k: AddressKey) -> Int32? {
        var i = hash(k) & mask
        while true {
            let s = slots[i]
            if s.value < 0 { return nil }
            if s.key.high == k.high && s.key.low == k.low { return s.value }
            i = (i + 1) & mask
        }
    }

    /// Starts loading the slot where a lookup of `k` begins (see `SessionTable.prefetch`).
    func prefetch(_ k: AddressKey) {
        slots.withUnsafeBufferPointer { rg_prefetch($0.baseAddress! + (hash(k) & mask)) }
    }

    /// Inserts a key known to be absent.
    func insert(_ k: AddressKey, _ v: Int32) {
        if (count + 1) * 2 > slots.count { grow() }
        place(k, v)
        count += 1
    }

    private func place(_ k: AddressKey, _ v: Int32) {
        var i = hash(k) & mask
        while slots[i].value >= 0 { i = (i + 1) & mask }
        slots[i] = Slot(key: k, value: v)
    }

    private func grow() {
        let old = slots
        slots = Array(repeating: Slot(key: AddressKey(high: 0, low: 0), value: -1), count: old.count * 2)
        mask = slots.count - 1
        for s in old where s.value >= 0 { place(s.key, s.value) }
    }
}

/// An address as a dictionary key: two 64-bit lanes hash with two `combine` calls, where
/// `IPAddress`'s `SIMD16<UInt8>` hashes byte by byte (the victim and reflector lookups were ~10%
/// of scoring a 1M-frame mixed capture, perf).
struct AddressKey: Hashable {
    var high: UInt64, low: UInt64
    init(_ a: IPAddress) {
        let v = unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self)
        high = v[0]; low = v[1]
    }
    init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
    var address: IPAddress { IPAddress(bytes: unsafeBitCast(SIMD2<UInt64>(high, low), to: SIMD16<UInt8>.self)) }
}

/// The `n` items with the highest count, ties in address text order. Only items that can make
/// the cut are formatted, once each: formatting addresses inside the sort's comparator took ~40%
/// of scoring a 1M-frame mixed capture (perf), for a report of 100 rows.
func topByCount<T>(_ items: [T], _ n: Int, count: (T) -> UInt64, address: (T) -> IPAddress) -> [(T, String)] {
    guard n > 0, !items.isEmpty else { return [] }
    var threshold: UInt64 = 0
    if items.count > n {
        var counts = items.map(count)
        counts.sort(by: >)
        threshold = counts[n - 1]
    }
    return items.filter { count($0) >= threshold }
        .map { ($0, address($0).description) }
        .sorted { let a = count($0.0), b = count($1.0); return a != b ? a > b : $0.1 < $1.1 }
        .prefix(n).map { $0 }
}

/// One bucket of the attack timeline.
public struct TimelineBucket: Sendable, Equatable {
    public var synPassed: UInt64 = 0
    public var synackPassed: UInt64 = 0
    public var synackDropped: UInt64 = 0
    public var rstPassed: UInt64 = 0
    public var rstDropped: UInt64 = 0
    public var otherDropped: UInt64 = 0
    public init() {}

    mutating func merge(_ o: TimelineBucket) {
        synPassed &+= o.synPassed; synackPassed &+= o.synackPassed; synackDropped &+= o.synackDropped
        rstPassed &+= o.rstPassed; rstDropped &+= o.rstDropped; otherDropped &+= o.otherDropped
    }
}

/// Handshake and RST packets per second since the first frame, passed vs dropped. Bounded: past
/// `maxBuckets` the buckets are merged pairwise and their width doubles, so a day-long capture
/// still fits in a few thousand buckets.
final class Timeline {
    static let maxBuckets = 3600
    @exclusivity(unchecked) private(set) var buckets: [TimelineBucket] = []
    /// Bucket width in seconds.
    @exclusivity(unchecked) private(set) var width: Int64 = 1
    @exclusivity(unchecked) private(set) var totals = TimelineBucket()

    func add(at offset: Nanoseconds, flags f: TCPFlags, dropped: Bool) {
        var b = TimelineBucket()
        if f.isSYNACK { if dropped { b.synackDropped = 1 } else { b.synackPassed = 1 } }
        else if f.isRST { if dropped { b.rstDropped = 1 } else { b.rstPassed = 1 } }
        else if f.isSYN && !dropped { b.synPassed = 1 }
        else if dropped { b.otherDropped = 1 }
        else { return }
        totals.merge(b)
        var i = Int(max(0, offset) / (width * 1_000_000_000))
        while i >= Self.maxBuckets {
            var merged: [TimelineBucket] = []
            merged.reserveCapacity(Self.maxBuckets / 2 + 1)
            var j = 0
            while j < buckets.count {
                var m = buckets[j]
                if j + 1 < buckets.count { m.merge(buckets[j + 1]) }
                merged.append(m)
                j += 2
            }
            buckets = merged
            width *= 2
            i = Int(max(0, offset) / (width * 1_000_000_000))
        }
        if buckets.count <= i { buckets.append(contentsOf: repeatElement(TimelineBucket(), count: i + 1 - buckets.count)) }
        buckets[i].merge(b)
    }
}

/// Labelled evaluation: per label, how many frames were accepted and dropped; precision and recall
/// of `drop` against the `attack-*` labels.
public struct LabelSummary: Sendable {
    public var perLabel: [(String, accept: UInt64, drop: UInt64)]
    public var precision: Double
    public var recall: Double
    public var truePositives: UInt64
    public var falsePositives: UInt64
    public var falseNegatives: UInt64
}

/// What a report shows: built by `ScoringPipeline.report`, rendered as text, JSON or HTML.
public struct ScoreReport: Sendable {
    public var source = ""
    public var linkType = ""
    /// Every link type of the input, first seen first (several in a pcapng file of several
    /// interfaces, or across a file set); `linkType` is the first.
    public var linkTypes: [String] = []
    /// The files scored, in the order scored (several for a file set).
    public var files: [String] = []
    public var firstTimestamp: Nanoseconds?
    public var lastTimestamp: Nanoseconds?
    public var packets = PacketCounts()
    public var accepted: UInt64 = 0
    public var dropped: UInt64 = 0
    /// Reason tokens with counts, most first.
    public var reasons: [(String, UInt64)] = []
    public var sessionsTotal: UInt64 = 0
    public var sessionsEvicted: UInt64 = 0
    public var endReasons: [(String, UInt64)] = []
    public var connStates: [(String, UInt64)] = []
    public var victims: [VictimRow] = []
    public var victimCount = 0
    /// Drops to protected hosts past the victim table's capacity (not in `victims`).
    public var victimsOverflow: UInt64 = 0
    public var victimPrefixes: [(prefix: String, victims: Int, dropped: UInt64)] = []
    public var reflectors: [(address: String, synackDropped: UInt64)] = []
    public var reflectorCount = 0
    public var reflectorsOverflow: UInt64 = 0
    public var timeline: [TimelineBucket] = []
    public var timelineWidth: Int64 = 1
    /// Attacks the engine reported (SYN-ACK and RST), in start order; `attacksLost` events
    /// did not fit the engine's event buffer.
    public var attacks: [AttackRow] = []
    public var attacksLost: UInt64 = 0
    public var labels: LabelSummary?
    public init() {}
}
