import CPrefetch
import PacketParser
import VerdictEngine

/// Why a session ended, as a PAN-OS traffic log names it (Zeek and PAN-OS name them the same way).
public enum EndReason: String, CaseIterable, Sendable {
    /// A host sent a FIN (one side or both), and no RST came before the close completed.
    case tcpFin = "tcp-fin"
    /// The client (the side that opened) sent the first RST.
    case tcpRstFromClient = "tcp-rst-from-client"
    /// The server sent the first RST: nothing listening, or the server aborting.
    case tcpRstFromServer = "tcp-rst-from-server"
    /// An established session went idle past its timeout (or was evicted from a full table).
    case agedOut = "aged-out"
    /// The handshake never completed and nothing closed the session before it went idle.
    case incomplete = "incomplete"
    /// Still alive when the capture ended.
    case open = "open"
}

extension EndReason {
    /// The case's position in `allCases`, the way `Reason.ordinal` numbers reasons: a switch in
    /// declaration order, which the compiler checks for every case and compiles to the stored tag
    /// (a cast of the enum's storage would trust its layout instead). A test checks the order.
    @inline(__always) var ordinal: Int {
        switch self {
        case .tcpFin: 0
        case .tcpRstFromClient: 1
        case .tcpRstFromServer: 2
        case .agedOut: 3
        case .incomplete: 4
        case .open: 5
        }
    }
}

extension ConnState {
    /// As `EndReason.ordinal`.
    @inline(__always) var ordinal: Int {
        switch self {
        case .S0: 0
        case .S1: 1
        case .SF: 2
        case .REJ: 3
        case .S2: 4
        case .S3: 5
        case .RSTO: 6
        case .RSTR: 7
        case .RSTOS0: 8
        case .RSTRH: 9
        case .SH: 10
        case .SHR: 11
        case .OTH: 12
        }
    }
}

/// Zeek's conn.log `conn_state`, computed the way Zeek's `conn_state()` does from the two
/// endpoints' TCP states (base/protocols/conn/main.zeek).
public enum ConnState: String, CaseIterable, Sendable {
    case S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH
}

/// One endpoint's TCP state in Zeek's model (TCP_INACTIVE … TCP_RESET).
enum EndpointState: UInt8 {
    case inactive, synSent, synAckSent, partial, established, closed, reset

    /// Zeek's "inactive" test: nothing sent, or only midstream traffic.
    var isInactive: Bool { self == .inactive || self == .partial }
}

/// How long an idle session is kept, by packet time. Values follow PAN-OS defaults where one
/// exists (tcp 3600 s, half-closed 120 s, time-wait 15 s); the handshake timeout is longer than
/// PAN-OS's 10 s so that a client's SYN retransmissions (1, 3, 7, 15 s apart) stay one session.
public struct SessionTimeouts: Sendable {
    public var handshake: Nanoseconds = 30_000_000_000
    public var established: Nanoseconds = 3_600_000_000_000
    public var halfClosed: Nanoseconds = 120_000_000_000
    public var closed: Nanoseconds = 15_000_000_000
    public init() {}
}

/// A finished session, as `--sessions FILE.csv` writes it.
public struct SessionRecord: Sendable {
    public var client: IPAddress
    public var clientPort: UInt16
    public var server: IPAddress
    public var serverPort: UInt16
    public var start: Nanoseconds
    public var end: Nanoseconds
    public var packetsToServer: UInt64
    public var packetsToClient: UInt64
    public var endReason: EndReason
    public var connState: ConnState
    public var history: String
}

/// The two endpoints of a TCP connection in a canonical order, so both directions find the same
/// entry with one lookup. Plain integer lanes: equality is a few compares, and the hash is ours
/// (Swift's `Hasher` over `SIMD16<UInt8>` combines byte by byte: 15% of a scoring run, measured).
struct FlowKey: Equatable {
    var low0: UInt64 = 0, low1: UInt64 = 0
    var high0: UInt64 = 0, high1: UInt64 = 0
    /// Port of `low` in the high 16 bits, port of `high` in the low 16.
    var ports: UInt32 = 0

    var lowAddress: IPAddress { IPAddress(bytes: unsafeBitCast(SIMD2(low0, low1), to: SIMD16<UInt8>.self)) }
    var highAddress: IPAddress { IPAddress(bytes: unsafeBitCast(SIMD2(high0, high1), to: SIMD16<UInt8>.self)) }
    var lowPort: UInt16 { UInt16(truncatingIfNeeded: ports >> 16) }
    var highPort: UInt16 { UInt16(truncatingIfNeeded: ports) }

    /// The key under the table's secret hash: every field is the sender's choice.
    @inline(__always)
    func hash(_ keyed: KeyedHash) -> UInt64 {
        keyed.hash(low0, low1, high0, high1, UInt64(ports))
    }
}

@inline(__always)
func lanes(_ a: IPAddress) -> SIMD2<UInt64> { unsafeBitCast(a.bytes, to: SIMD2<UInt64>.self) }

/// Letters of Zeek's history string: upper case from the client, lower case from the server.
private let historyLetters: [UInt8] = Array("SHADFR".utf8)
private enum Letter: UInt8 { case syn = 0, synAck, ack, data, fin, rst }

/// Session state for one connection. Endpoint "A" is the first sender; which of A and B is the
/// client is decided by the rules of the issue (SYN sender; else SYN-ACK receiver; else A) and can
/// change while packets arrive, so everything is kept per endpoint and mapped at the end.
/// The addresses and ports live in `key` only (A is its low or high end, `aIsLow` says which), so
/// an entry fits two cache lines: a scoring run is bound by cache misses on this table (perf).
struct SessionEntry {
    var key = FlowKey()
    var start: Nanoseconds = 0
    var last: Nanoseconds = 0
    /// Packet time at which the entry was last appended to its class's list (see `touch`).
    var listedAt: Nanoseconds = 0
    var packetsA: UInt64 = 0
    var packetsB: UInt64 = 0
    /// History events, 4 bits each in order: bit 3 = sent by B, bits 0-2 = `Letter`.
    var history: UInt64 = 0
    var prev: Int32 = -1
    var next: Int32 = -1
    /// One bit per (letter, endpoint) already recorded: Zeek records each letter once per side.
    var seen: UInt16 = 0
    var historyCount: UInt8 = 0
    var stateA = EndpointState.inactive
    var stateB = EndpointState.inactive
    /// 0: client is the first sender; 1: decided by a SYN-ACK; 2: decided by a SYN.
    var roleEvidence: UInt8 = 0
    var clientIsA = true
    /// 0 none, 1 FIN seen, 2 first RST by A, 3 first RST by B.
    var ending: UInt8 = 0
    var timeoutClass: UInt8 = 0
    var inUse = false
    var aIsLow = true
    /// Whether A (bit 0) and B (bit 1) sent any payload: Zeek's REJ test only asks for zero bytes.
    var sentPayload: UInt8 = 0
    /// To 128 bytes: with the table aligned to 128, an entry is exactly two cache lines.
    private var padding: (UInt64, UInt64) = (0, 0)

    var addrA: IPAddress { aIsLow ? key.lowAddress : key.highAddress }
    var addrB: IPAddress { aIsLow ? key.highAddress : key.lowAddress }
    var portA: UInt16 { aIsLow ? key.lowPort : key.highPort }
    var portB: UInt16 { aIsLow ? key.highPort : key.lowPort }
}

/// Tracks every TCP session of a capture or a live feed in a fixed-capacity table. Idle sessions
/// age out by packet time (never by the wall clock, so a capture always gives the same result);
/// when the table is full the least recently seen session is closed as `aged-out` and counted in
/// `evicted`. Each closed session is counted by end reason and conn_state and handed to `sink`.
/// The index is keyed with a secret seed; nothing the table reports depends on it: which session
/// expires or is evicted follows packet time, and entries take free slots in closing order.
public final class SessionTable {
    public let capacity: Int
    private let keyedHash: KeyedHash
    // Read on every packet; set once before the first (see the exclusivity note below).
    @exclusivity(unchecked) public var timeouts: SessionTimeouts
    /// Called with every session as it closes (for `--sessions FILE.csv`).
    @exclusivity(unchecked) public var sink: ((SessionRecord) -> Void)?

    // @exclusivity(unchecked): the table is used from one thread and never hands out inout
    // access to its state, so the runtime checks (swift_beginAccess, ~10% of a scoring run,
    // perf) prove nothing here.
    @exclusivity(unchecked) public private(set) var total: UInt64 = 0
    @exclusivity(unchecked) public private(set) var evicted: UInt64 = 0
    @exclusivity(unchecked) public private(set) var active = 0
    /// Closed sessions by end reason and by conn_state, indexed by case tag: closing happens for
    /// every session, and a dictionary keyed by a String-backed enum hashes the string.
    @exclusivity(unchecked) private var endReasonCounts = [UInt64](repeating: 0, count: EndReason.allCases.count)
    @exclusivity(unchecked) private var connStateCounts = [UInt64](repeating: 0, count: ConnState.allCases.count)

    public var endReasons: [EndReason: UInt64] {
        var out: [EndReason: UInt64] = [:]
        for e in EndReason.allCases where endReasonCounts[e.ordinal] > 0 { out[e] = endReasonCounts[e.ordinal] }
        return out
    }

    public var connStates: [ConnState: UInt64] {
        var out: [ConnState: UInt64] = [:]
        for c in ConnState.allCases where connStateCounts[c.ordinal] > 0 { out[c] = connStateCounts[c.ordinal] }
        return out
    }

    // Fixed-capacity storage in raw memory allocated once: the packet path never allocates, and
    // pointer access skips the dynamic exclusivity checks that class-held arrays pay (~15% of a
    // scoring run, measured). The OS maps the pages only as sessions first use them.
    private let entries: UnsafeMutablePointer<SessionEntry>
    @exclusivity(unchecked) private var highWater: Int32 = 0
    private let freeSlots: UnsafeMutablePointer<Int32>
    @exclusivity(unchecked) private var freeCount = 0
    /// Open addressing with linear probing: an entry index or -1. At most half full. It starts
    /// small and doubles with the live sessions (up to twice the capacity): a table sized for
    /// the maximum up front spread a few thousand live sessions over 2 MiB, and the cache misses
    /// made lookups a quarter of a scoring run (perf).
    /// Each bucket holds the entry index in its low 32 bits (all ones: empty) and the low 32 bits
    /// of the key's hash above: a probe compares the hash before touching the entry, and the
    /// backward shift finds an entry's home without reading it. Dereferencing the entry on every
    /// probe was a cache miss each, a third of scoring a 5M-frame capture (perf, bench.sh score).
    @exclusivity(unchecked) private var buckets: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) private var bucketMask: Int
    private let maxBuckets: Int
    // One least-recently-seen list per timeout class, so each list's head expires first.
    private static let classCount = 4
    @exclusivity(unchecked) private var heads = (Int32(-1), Int32(-1), Int32(-1), Int32(-1))
    @exclusivity(unchecked) private var tails = (Int32(-1), Int32(-1), Int32(-1), Int32(-1))

    /// `hashSeed` keys the index: random unless a test fixes it.
    public init(capacity: Int = 1 << 18, timeouts: SessionTimeouts = SessionTimeouts(),
                hashSeed: UInt64 = KeyedHash.randomSeed()) {
        self.capacity = max(1, min(capacity, Int(Int32.max / 4)))
        self.timeouts = timeouts
        keyedHash = KeyedHash(hashSeed)
        entries = UnsafeMutableRawPointer.allocate(byteCount: self.capacity * MemoryLayout<SessionEntry>.stride,
                                                   alignment: 128).bindMemory(to: SessionEntry.self, capacity: self.capacity)
        freeSlots = .allocate(capacity: self.capacity)
        var n = 16
        while n < 2 * self.capacity { n <<= 1 }
        maxBuckets = n
        let start = min(n, 1024)
        buckets = .allocate(capacity: start)
        buckets.initialize(repeating: SessionTable.emptyBucket, count: start)
        bucketMask = start - 1
    }

    deinit {
        entries.deinitialize(count: Int(highWater))
        entries.deallocate()
        freeSlots.deallocate()
        buckets.deallocate()
    }

    private func head(_ c: Int) -> Int32 {
        switch c { case 0: return heads.0; case 1: return heads.1; case 2: return heads.2; default: return heads.3 }
    }
    private func setHead(_ c: Int, _ v: Int32) {
        switch c { case 0: heads.0 = v; case 1: heads.1 = v; case 2: heads.2 = v; default: heads.3 = v }
    }
    private func tail(_ c: Int) -> Int32 {
        switch c { case 0: return tails.0; case 1: return tails.1; case 2: return tails.2; default: return tails.3 }
    }
    private func setTail(_ c: Int, _ v: Int32) {
        switch c { case 0: tails.0 = v; case 1: tails.1 = v; case 2: tails.2 = v; default: tails.3 = v }
    }

    // MARK: - The index

    private static let emptyBucket = UInt64.max

    @inline(__always)
    private static func bucket(hash: UInt32, slot: Int32) -> UInt64 {
        UInt64(hash) << 32 | UInt64(UInt32(bitPattern: slot))
    }

    @inline(__always)
    private static func slot(_ b: UInt64) -> Int32 { Int32(truncatingIfNeeded: b) }

    private func find(_ key: FlowKey) -> Int32? {
        let h = UInt32(truncatingIfNeeded: key.hash(keyedHash))
        var i = Int(h) & bucketMask
        while true {
            let b = buckets[i]
            let e = SessionTable.slot(b)
            if e < 0 { return nil }
            if UInt32(truncatingIfNeeded: b >> 32) == h && entries[Int(e)].key == key { return e }
            i = (i + 1) & bucketMask
        }
    }

    /// How far the live sessions sit from their home buckets (see `ProbeStatistics`): read from
    /// the index alone, whose buckets carry their hash's low bits.
    public var probeStatistics: ProbeStatistics {
        var stats = ProbeStatistics()
        for i in 0...bucketMask where SessionTable.slot(buckets[i]) >= 0 {
            let home = Int(buckets[i] >> 32) & bucketMask
            stats.add(probes: ((i - home) & bucketMask) + 1)
        }
        return stats
    }

    /// Doubles the index and re-inserts every live session: rare (log2 of the peak), amortized.
    private func growIndex() {
        let n = (bucketMask + 1) * 2
        buckets.deallocate()
        buckets = .allocate(capacity: n)
        buckets.initialize(repeating: SessionTable.emptyBucket, count: n)
        bucketMask = n - 1
        for i in 0..<highWater where entries[Int(i)].inUse {
            indexInsert(entries[Int(i)].key, i)
        }
    }

    private func indexInsert(_ key: FlowKey, _ slot: Int32) {
        let h = UInt32(truncatingIfNeeded: key.hash(keyedHash))
        var i = Int(h) & bucketMask
        while SessionTable.slot(buckets[i]) >= 0 { i = (i + 1) & bucketMask }
        buckets[i] = SessionTable.bucket(hash: h, slot: slot)
    }

    /// Backward-shift deletion: no tombstones, so probe chains never grow stale.
    private func indexRemove(_ key: FlowKey, _ slot: Int32) {
        var i = Int(truncatingIfNeeded: key.hash(keyedHash)) & bucketMask
        while SessionTable.slot(buckets[i]) != slot {
            if SessionTable.slot(buckets[i]) < 0 { return }
            i = (i + 1) & bucketMask
        }
        var hole = i
        var j = i
        while true {
            j = (j + 1) & bucketMask
            let e = buckets[j]
            if SessionTable.slot(e) < 0 { break }
            // The stored low 32 bits of the hash give the home: bucketMask < 2^32.
            let home = Int(e >> 32) & bucketMask
            // e may move into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !stays {
                buckets[hole] = e
                hole = j
            }
        }
        buckets[hole] = SessionTable.emptyBucket
    }

    /// The canonical key of a packet's connection, and whether the packet comes from its low end.
    @inline(__always)
    static func key(of packet: ParsedPacket) -> (FlowKey, fromLow: Bool) {
        let src = lanes(packet.source), dst = lanes(packet.destination)
        let fromLow = src[0] != dst[0] ? src[0] < dst[0]
            : src[1] != dst[1] ? src[1] < dst[1] : packet.sourcePort < packet.destinationPort
        let key = fromLow
            ? FlowKey(low0: src[0], low1: src[1], high0: dst[0], high1: dst[1],
                      ports: UInt32(packet.sourcePort) << 16 | UInt32(packet.destinationPort))
            : FlowKey(low0: dst[0], low1: dst[1], high0: src[0], high1: src[1],
                      ports: UInt32(packet.destinationPort) << 16 | UInt32(packet.sourcePort))
        return (key, fromLow)
    }

    /// Starts loading what `observe` will read for a packet that comes `distance` (1 or 2)
    /// packets later: at 2, the index bucket of its session; at 1, the session entry that bucket
    /// names (loaded by then) and, when the table is full, the bucket of the session the next
    /// insertion evicts and the entry after it. A hint only: it changes nothing. The table is far
    /// larger than the caches, and waiting for these lines one after the other was most of a
    /// scoring run (perf).
    public func prefetch(_ packet: ParsedPacket, distance: Int) {
        guard packet.hasTCP else { return }
        let h = UInt32(truncatingIfNeeded: Self.key(of: packet).0.hash(keyedHash))
        let home = Int(h) & bucketMask
        if distance >= 2 {
            rg_prefetch(buckets + home)
            return
        }
        let b = buckets[home]
        if UInt32(truncatingIfNeeded: b >> 32) == h { rg_prefetch(entries + Int(Self.slot(b))) }
        guard active >= capacity else { return }
        let oldest = oldestListed()
        guard oldest >= 0 else { return }
        let next = entries[Int(oldest)].next
        if next >= 0 { rg_prefetch(entries + Int(next)) }
        rg_prefetch(buckets + (Int(truncatingIfNeeded: entries[Int(oldest)].key.hash(keyedHash)) & bucketMask))
    }

    /// Feeds one TCP packet (`packet.hasTCP` must be true).
    public func observe(_ packet: ParsedPacket, at now: Nanoseconds) {
        expire(before: now)
        let (key, fromLow) = Self.key(of: packet)
        var slot: Int32
        if let s = find(key) {
            slot = s
            let e = entries + Int(s)
            // Lists are ordered only to within `relistAfter` (see `touch`), so a session may be a
            // little past its timeout and still here: it ends as if it had been expired on time.
            if idlePastTimeout(e.pointee, at: now) {
                close(slot: s, reason: nil)
                slot = insert(key: key, fromLow: fromLow, at: now)
            } else if packet.flags.isSYN, e.pointee.ending >= 2 || (e.pointee.stateA == .closed && e.pointee.stateB == .closed) {
                // A new SYN on a 4-tuple whose session already ended is port reuse: a new session.
                close(slot: s, reason: nil)
                slot = insert(key: key, fromLow: fromLow, at: now)
            }
        } else {
            slot = insert(key: key, fromLow: fromLow, at: now)
        }
        let e = entries + Int(slot)
        Self.apply(&e.pointee, fromA: fromLow == e.pointee.aIsLow, packet: packet, at: now)
        touch(slot: slot, at: now)
    }

    /// Closes every session still in the table: those idle past their timeout as `aged-out` /
    /// `incomplete`, the others as `open` (alive when the capture ended).
    public func finish(at now: Nanoseconds) {
        expire(before: now)
        // By start time, so `--sessions` rows come out in the same order on every run.
        var remaining: [Int32] = []
        remaining.reserveCapacity(active)
        for i in 0..<highWater where entries[Int(i)].inUse { remaining.append(i) }
        remaining.sort {
            entries[Int($0)].start != entries[Int($1)].start ? entries[Int($0)].start < entries[Int($1)].start : $0 < $1
        }
        for slot in remaining {
            let e = entries[Int(slot)]
            close(slot: slot, reason: idlePastTimeout(e, at: now) ? nil : .open)
        }
    }

    // MARK: - Insertion and update

    private func insert(key: FlowKey, fromLow: Bool, at now: Nanoseconds) -> Int32 {
        if active >= capacity { evictOldest() }
        var e = SessionEntry()
        e.key = key
        e.aIsLow = fromLow
        e.timeoutClass = Self.unlisted
        e.start = now
        e.last = now
        e.inUse = true
        let slot: Int32
        if freeCount > 0 {
            freeCount -= 1
            slot = freeSlots[freeCount]
            entries[Int(slot)] = e
        } else {
            slot = highWater
            (entries + Int(slot)).initialize(to: e)
            highWater += 1
        }
        active += 1
        if active * 2 > bucketMask + 1 && bucketMask + 1 < maxBuckets {
            // The new entry is in use already, so the rebuild indexes it too.
            growIndex()
        } else {
            indexInsert(key, slot)
        }
        total &+= 1
        return slot
    }

    private static func apply(_ e: inout SessionEntry, fromA: Bool, packet: ParsedPacket, at now: Nanoseconds) {
        if now > e.last { e.last = now }
        if fromA { e.packetsA &+= 1 } else { e.packetsB &+= 1 }
        if packet.payloadLength > 0 { e.sentPayload |= fromA ? 1 : 2 }
        let f = packet.flags
        var mine = fromA ? e.stateA : e.stateB
        var peer = fromA ? e.stateB : e.stateA

        if f.isRST {
            record(&e, .rst, fromA: fromA)
            if e.ending < 2 && !(e.stateA == .closed && e.stateB == .closed) {
                e.ending = fromA ? 2 : 3
            }
            mine = .reset
        } else if f.isSYN && !f.contains(.ack) {
            record(&e, .syn, fromA: fromA)
            if e.roleEvidence < 2 { e.roleEvidence = 2; e.clientIsA = fromA }
            if mine == .inactive || mine == .partial { mine = .synSent }
        } else if f.isSYNACK {
            record(&e, .synAck, fromA: fromA)
            if e.roleEvidence < 1 { e.roleEvidence = 1; e.clientIsA = !fromA }
            if mine == .inactive || mine == .partial { mine = .synAckSent }
        } else {
            if packet.payloadLength > 0 { record(&e, .data, fromA: fromA) }
            else if f.contains(.ack) && !f.isFIN { record(&e, .ack, fromA: fromA) }
            switch mine {
            case .synSent, .synAckSent:
                mine = .established
                if peer == .synAckSent || peer == .synSent { peer = .established }
            case .inactive:
                mine = .partial
            default:
                break
            }
            if f.isFIN {
                record(&e, .fin, fromA: fromA)
                if mine != .reset { mine = .closed }
                if e.ending == 0 { e.ending = 1 }
            }
        }
        if fromA { e.stateA = mine; e.stateB = peer } else { e.stateB = mine; e.stateA = peer }
    }

    private static func record(_ e: inout SessionEntry, _ letter: Letter, fromA: Bool) {
        let code = letter.rawValue | (fromA ? 0 : 8)
        let bit: UInt16 = 1 << UInt16(code)
        guard e.seen & bit == 0, e.historyCount < 16 else { return }
        e.seen |= bit
        e.history |= UInt64(code) << (4 * UInt64(e.historyCount))
        e.historyCount += 1
    }

    // MARK: - Ageing

    private func timeoutClass(_ e: SessionEntry) -> UInt8 {
        if e.ending >= 2 || (e.stateA == .closed && e.stateB == .closed) { return 3 }
        if e.ending == 1 { return 2 }
        let established = e.stateA == .established || e.stateB == .established
            || e.stateA == .closed || e.stateB == .closed || (e.packetsA > 0 && e.packetsB > 0 && e.roleEvidence == 0)
        return established ? 1 : 0
    }

    /// Whether a session has been idle longer than its class allows at packet time `now`.
    private func idlePastTimeout(_ e: SessionEntry, at now: Nanoseconds) -> Bool {
        e.last &+ timeout(ofClass: Int(timeoutClass(e))) < now
    }

    private func timeout(ofClass c: Int) -> Nanoseconds {
        switch c {
        case 0: return timeouts.handshake
        case 1: return timeouts.established
        case 2: return timeouts.halfClosed
        default: return timeouts.closed
        }
    }

    /// Closes the sessions idle past their timeout. A list is in `listedAt` order and an entry's
    /// last packet is less than `relistAfter` after its `listedAt`, so when the head is not yet
    /// due, it will be within `relistAfter`, and nothing behind it waits longer than that.
    private func expire(before now: Nanoseconds) {
        for c in 0..<Self.classCount {
            let limit = timeout(ofClass: c)
            while head(c) >= 0 {
                let h = head(c)
                guard entries[Int(h)].last &+ limit < now else { break }
                close(slot: h, reason: nil)
            }
        }
    }

    /// The least recently seen of the lists' heads: the session a full table evicts next.
    private func oldestListed() -> Int32 {
        var oldest: Int32 = -1
        for c in 0..<Self.classCount where head(c) >= 0 {
            if oldest < 0 || entries[Int(head(c))].last < entries[Int(oldest)].last { oldest = head(c) }
        }
        return oldest
    }

    private func evictOldest() {
        let oldest = oldestListed()
        guard oldest >= 0 else { return }
        evicted &+= 1
        close(slot: oldest, reason: .agedOut)
    }

    /// `timeoutClass` of an entry on no list yet (just inserted).
    private static let unlisted: UInt8 = .max

    /// How stale an entry's place in its list may get before a packet moves it to the tail.
    /// Moving on every packet touched both list neighbours, two cache misses per packet in a
    /// table of hundreds of thousands of sessions; this way a session moves when its class
    /// changes and at most once a second, and expiry runs at most this late (see `expire`).
    static let relistAfter: Nanoseconds = 1_000_000_000

    private func unlink(_ slot: Int32) {
        let e = entries + Int(slot)
        let c = Int(e.pointee.timeoutClass)
        guard c != Int(Self.unlisted) else { return }
        let prev = e.pointee.prev, next = e.pointee.next
        if prev >= 0 { entries[Int(prev)].next = next } else { setHead(c, next) }
        if next >= 0 { entries[Int(next)].prev = prev } else { setTail(c, prev) }
        e.pointee.prev = -1
        e.pointee.next = -1
        e.pointee.timeoutClass = Self.unlisted
    }

    /// Moves a session to the tail of its class's list when its class changed or its place there
    /// is older than `relistAfter` (packet time going backwards counts as fresh).
    private func touch(slot: Int32, at now: Nanoseconds) {
        let e = entries + Int(slot)
        let c = timeoutClass(e.pointee)
        if e.pointee.timeoutClass == c && now &- e.pointee.listedAt < Self.relistAfter { return }
        unlink(slot)
        e.pointee.timeoutClass = c
        e.pointee.listedAt = now
        let t = tail(Int(c))
        e.pointee.prev = t
        e.pointee.next = -1
        if t >= 0 { entries[Int(t)].next = slot } else { setHead(Int(c), slot) }
        setTail(Int(c), slot)
    }

    // MARK: - Closing

    /// Closes a session. `reason` forces an end reason when no FIN/RST decided one (`.open` at
    /// capture end for sessions not yet idle, `.agedOut` on eviction); nil means it timed out.
    private func close(slot: Int32, reason: EndReason?) {
        let e = entries[Int(slot)]
        unlink(slot)
        indexRemove(e.key, slot)
        active -= 1
        var end: EndReason
        let clientIsA = e.clientIsA
        switch e.ending {
        case 2: end = clientIsA ? .tcpRstFromClient : .tcpRstFromServer
        case 3: end = clientIsA ? .tcpRstFromServer : .tcpRstFromClient
        case 1: end = .tcpFin
        default:
            let established = timeoutClass(e) != 0
            if reason == .open {
                end = .open
            } else {
                end = reason ?? (established ? .agedOut : .incomplete)
                if reason == .agedOut && !established { end = .incomplete }
            }
        }
        let state = Self.connState(e)
        endReasonCounts[end.ordinal] &+= 1
        connStateCounts[state.ordinal] &+= 1
        if let sink {
            sink(SessionRecord(
                client: clientIsA ? e.addrA : e.addrB, clientPort: clientIsA ? e.portA : e.portB,
                server: clientIsA ? e.addrB : e.addrA, serverPort: clientIsA ? e.portB : e.portA,
                start: e.start, end: e.last,
                packetsToServer: clientIsA ? e.packetsA : e.packetsB,
                packetsToClient: clientIsA ? e.packetsB : e.packetsA,
                endReason: end, connState: state, history: Self.history(e)))
        }
        entries[Int(slot)].inUse = false
        freeSlots[freeCount] = slot
        freeCount += 1
    }

    static func history(_ e: SessionEntry) -> String {
        var s = ""
        for i in 0..<Int(e.historyCount) {
            let code = UInt8((e.history >> (4 * UInt64(i))) & 0xf)
            let fromA = code & 8 == 0
            var ch = historyLetters[Int(code & 7)]
            if fromA != e.clientIsA { ch += 32 }   // the server's letters are lower case
            s.unicodeScalars.append(Unicode.Scalar(ch))
        }
        return s
    }

    /// Zeek's `conn_state()` with orig = client, resp = server.
    static func connState(_ e: SessionEntry) -> ConnState {
        let os = e.clientIsA ? e.stateA : e.stateB
        let rs = e.clientIsA ? e.stateB : e.stateA
        if rs == .reset {
            if os == .synSent || os == .synAckSent || (os == .reset && e.sentPayload == 0) {
                return .REJ
            }
            return os.isInactive ? .RSTRH : .RSTR
        }
        if os == .reset {
            if rs.isInactive {
                return clientSynThenResetOnly(e) ? .RSTOS0 : .OTH
            }
            return .RSTO
        }
        if rs == .closed && os == .closed { return .SF }
        if os == .closed { return rs.isInactive ? .SH : .S2 }
        if rs == .closed { return os.isInactive ? .SHR : .S3 }
        if os == .synSent && rs == .inactive { return .S0 }
        if os == .established && rs == .established { return .S1 }
        return .OTH
    }

    /// Zeek's `/^?S[^HAFGIQ]*R.*/` on the history: the client's SYN first, then its RST with no
    /// SYN-ACK, ACK or FIN from it in between.
    private static func clientSynThenResetOnly(_ e: SessionEntry) -> Bool {
        let clientBit: UInt8 = e.clientIsA ? 0 : 8
        guard e.historyCount > 0, UInt8(e.history & 0xf) == Letter.syn.rawValue | clientBit else { return false }
        for i in 1..<max(1, Int(e.historyCount)) {
            let code = UInt8((e.history >> (4 * UInt64(i))) & 0xf)
            guard code & 8 == clientBit else { continue }
            switch code & 7 {
            case Letter.rst.rawValue: return true
            case Letter.synAck.rawValue, Letter.ack.rawValue, Letter.fin.rawValue: return false
            default: continue
            }
        }
        return false
    }
}
