import PacketParser

/// Token buckets (RST budgets), per-victim and per-prefix drop rates, and the attack detector
/// that reports victims under attack (`AttackEvent`).
extension Engine {
    /// Whether an address is IPv4-mapped (`::ffff:0:0/96`), on its lanes (`IPAddress.lanesAreV4`:
    /// `isIPv4Mapped`'s `static let` masks cost a `swift_once` call per use, three per drop).
    @inline(__always)
    static func isV4(_ a: SIMD16<UInt8>) -> Bool {
        IPAddress.lanesAreV4(unsafeBitCast(a, to: SIMD2<UInt64>.self))
    }

    /// The victim prefix of an address: /24 for IPv4, /64 for IPv6.
    @inline(__always)
    static func prefix(_ a: SIMD16<UInt8>) -> SIMD16<UInt8> {
        var x = unsafeBitCast(a, to: SIMD2<UInt64>.self)
        // /120 of a mapped address clears byte 15 (the top byte of lane 1); /64 clears lane 1.
        x[1] &= isV4(a) ? 0x00ff_ffff_ffff_ffff : 0
        return unsafeBitCast(x, to: SIMD16<UInt8>.self)
    }

    /// The rate slot for `key`, created if needed, with its window rolled to `ms`. Updates the
    /// slot in place: copying the whole slot out and back cost more than the rest of a drop.
    @inline(__always)
    func touch(_ t: borrowing GroupTable<RateStats>, _ key: SIMD16<UInt8>, _ ms: UInt32) -> Int {
        let h = seed.hash(key)
        var i = t.find(key, hash: h)
        if i < 0 {
            i = t.claim(hash: h, now: ms, idleLimit: Engine.attackQuietMs * 6, seed: seed)
            t.slots[i] = RateStats(key: key, now: ms)
        }
        if age(ms, since: t.slots[i].windowStart) >= 1000 { Engine.roll(t.slots + i, ms) }
        t.slots[i].lastSeen = ms
        return i
    }

    /// Closes a rate slot's window (once a second per slot, so kept out of line).
    @inline(never)
    private static func roll(_ slot: UnsafeMutablePointer<RateStats>, _ ms: UInt32) {
        var r = slot.pointee
        let secs = Float(age(ms, since: r.windowStart)) / 1000
        r.synackRate = Float(r.synacks) / secs
        r.dropRate = Float(r.synackDrops) / secs
        // The baseline follows normal traffic, but a flood may raise it only slowly.
        r.baseline += 0.05 * (min(r.synackRate, 2 * r.baseline + 10) - r.baseline)
        r.lastReflectors = UInt16(r.reflectors[0].nonzeroBitCount + r.reflectors[1].nonzeroBitCount)
        r.synacks = 0; r.synackDrops = 0; r.reflectors = .zero
        r.windowStart = ms
        slot.pointee = r
    }

    /// Counts a SYN-ACK (or unreadable-header) drop against the victim's prefix, and starts or extends
    /// a SYN-ACK attack there.
    @inline(__always)
    func noteDrop(_ victim: IPAddress, _ ms: UInt32, now: Nanoseconds) {
        let key = Engine.prefix(victim.bytes)
        let slot = prefixRates.slots + touch(prefixRates, key, ms)
        slot.pointee.synackDrops &+= 1
        let total = slot.pointee.synackDrops
        let half = tuning.pointee.attackHalf
        guard total >= half else { return }
        if slot.pointee.attackActive {
            if total == half { slot.pointee.lastAboveMs = ms }
            return
        }
        guard Float(total) >= attackThreshold else { return }
        startAttack(slot, key, ms, now: now)
    }

    /// A prefix's drops crossed the threshold (once per attack, so out of line).
    @inline(never)
    func startAttack(_ slot: UnsafeMutablePointer<RateStats>, _ key: SIMD16<UInt8>, _ ms: UInt32, now: Nanoseconds) {
        slot.pointee.attackActive = true
        slot.pointee.lastAboveMs = ms
        let r = slot.pointee
        // Rare (once per attack): an attack whose rate slot was recycled may still be listed.
        if let a = active.firstIndex(where: { sameBytes($0.key, key) }) {
            active[a].lastAboveMs = ms
            return
        }
        guard active.count < Engine.maxActiveAttacks else { return }
        let cidr = CIDR(address: IPAddress(bytes: key), length: Engine.isV4(key) ? 120 : 64)
        active.append(ActiveAttack(key: key, prefix: cidr, startedAt: now, lastAboveMs: ms))
        emit(AttackEvent(kind: .started, prefix: cidr, at: now, startedAt: now,
                         synackDropRate: Double(r.synackDrops), rstDropRate: 0))
    }

    /// Once a second of packet time: ends attacks that have been quiet long enough.
    func tick(_ ms: UInt32) {
        hot.pointee.lastTickSecond = ms / 1000
        if !hot.pointee.started { hot.pointee.started = true; hot.pointee.startMs = ms }
        tickRSTAttacks(ms)
        var k = 0
        while k < active.count {
            let a = active[k]
            let i = prefixRates.find(a.key, hash: seed.hash(a.key))
            var lastAbove = a.lastAboveMs
            if i >= 0 && prefixRates.slots[i].attackActive,
               age(ms, since: prefixRates.slots[i].lastAboveMs) < age(ms, since: lastAbove) {
                lastAbove = prefixRates.slots[i].lastAboveMs
            }
            if age(ms, since: lastAbove) >= Engine.attackQuietMs {
                if i >= 0 { prefixRates.slots[i].attackActive = false }
                let r = i >= 0 ? prefixRates.slots[i] : RateStats(key: a.key, now: ms)
                let at = a.startedAt + Int64(age(ms, since: Engine.msTime(a.startedAt))) * 1_000_000
                emit(AttackEvent(kind: .ended, prefix: a.prefix, at: at, startedAt: a.startedAt,
                                 synackDropRate: Double(r.dropRate), rstDropRate: 0))
                active.swapAt(k, active.count - 1)
                active.removeLast()
            } else {
                k += 1
            }
        }
    }

    func emit(_ e: AttackEvent) {
        if events.count < Engine.maxPendingEvents { events.append(e) } else { eventsLost &+= 1 }
    }

    /// Refills the bucket for `key` to packet time `ms` (a new bucket starts full, or at the
    /// level of the bucket it replaced); its slot. `holdFloor` is for `RSTBudget`'s hold bucket.
    @inline(__always)
    func refill<S: TokenSlot>(_ t: borrowing GroupTable<S>, _ key: SIMD16<UInt8>, _ ms: UInt32, rate: Float, burst: Float,
                              holdFloor: Float = 0) -> Int {
        let h = seed.hash(key)
        var i = t.find(key, hash: h)
        if i < 0 {
            // Idle limit 0: when the table is full, the oldest bucket of the key's neighbourhood
            // is reused. The new key inherits that bucket's level refilled to now, so a flood
            // spread over more keys than the table holds cannot reset budgets by evicting them
            // (each slot still refills at `rate`); a bucket idle for long has refilled to the
            // burst anyway, so normal traffic sees full new buckets as before.
            let before = t.count
            i = t.claim(hash: h, now: ms, idleLimit: 0, seed: seed)
            var tokens = burst
            if t.count == before {
                let old = t.slots[i]
                tokens = min(burst, old.tokens + Float(age(ms, since: old.lastSeen)) / 1000 * rate)
            }
            t.slots[i] = S(key: key, tokens: tokens, now: ms)
            return i
        }
        let el = Float(age(ms, since: t.slots[i].lastSeen)) / 1000
        t.slots[i].refill(seconds: el, rate: rate, burst: burst, holdFloor: holdFloor)
        t.slots[i].lastSeen = ms
        return i
    }

    /// Takes one token from the bucket for `key`, if it has one.
    @inline(__always)
    func take(_ t: borrowing GroupTable<Bucket>, _ key: SIMD16<UInt8>, _ ms: UInt32, rate: Float, burst: Float) -> Bool {
        let i = refill(t, key, ms, rate: rate, burst: burst)
        guard t.slots[i].tokens >= 1 else { return false }
        t.slots[i].tokens -= 1
        return true
    }
}
