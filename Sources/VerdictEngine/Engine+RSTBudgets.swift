import PacketParser

/// RSTs on flows nobody tracks: the static budgets (the ceiling), the baselines learnt per
/// address, /24 or /64 and protected network, and the RST attacks judged against them.
///
/// The static ceilings alone let a spread flood through: 5,000 RSTs a second over a /24 put
/// 20 a second on each address, under `rst_rate`, and stay under the /24's `rst_prefix_rate`
/// when the flood covers more than one /24. A prefix normally gets few untracked RSTs (refusals,
/// closes and aborts of flows seen since start are tracked), so the floor of an attack can sit
/// far below the ceiling; while one lasts the prefix gets its baseline, no more.
extension Engine {
    /// A RST to a protected host on a flow the engine does not track (or past its tracked RSTs).
    func untrackedRST(_ p: ParsedPacket, _ ms: UInt32, now: Nanoseconds) -> Decision {
        let t = tuning.base
        let hold = t.pointee.rstHoldRate
        let a = rstAddressBuckets.slots
            + refill(rstAddressBuckets, p.destination.bytes, ms, rate: t.pointee.rstRate, burst: t.pointee.rstBurst, holdFloor: hold)
        let (b, n) = prefixAndNetwork(p, ms)
        a.pointee.countUntracked(ms, alpha: learningRate(ms), slack: hold, frozen: b.pointee.attackActive || n.pointee.attackActive)
        count(b, n, p, ms, now: now)

        var ok = a.pointee.tokens >= 1 && b.pointee.tokens >= 1 && n.pointee.tokens >= 1
        let held = b.pointee.attackActive || n.pointee.attackActive
        if ok && held { ok = a.pointee.hold >= 1 && b.pointee.hold >= 1 && n.pointee.hold >= 1 }
        if ok {
            a.pointee.tokens -= 1; b.pointee.tokens -= 1; n.pointee.tokens -= 1
            if held { a.pointee.hold -= 1; b.pointee.hold -= 1; n.pointee.hold -= 1 }
            return Decision(.accept, .rstWithinRate)
        }
        return drop(.rstRateLimit, p)
    }

    /// A RST dropped on a tracked flow (out of its window, or not acknowledging a pending SYN):
    /// the flood it belongs to is an RST attack on the prefix too.
    func noteRSTDrop(_ p: ParsedPacket, _ ms: UInt32, now: Nanoseconds) {
        let (b, n) = prefixAndNetwork(p, ms)
        count(b, n, p, ms, now: now)
    }

    /// The destination's /24 or /64 budget and its protected network's, refilled to `ms`.
    @inline(__always)
    private func prefixAndNetwork(_ p: ParsedPacket, _ ms: UInt32) -> (UnsafeMutablePointer<RSTBudget>, UnsafeMutablePointer<RSTBudget>) {
        let t = tuning.base
        let hold = t.pointee.rstHoldRate
        let b = rstPrefixBuckets.slots
            + refill(rstPrefixBuckets, Engine.prefix(p.destination.bytes), ms, rate: t.pointee.rstPrefixRate,
                     burst: t.pointee.rstPrefixBurst, holdFloor: hold)
        // The destination is protected here, so its network has a budget.
        let n = t.pointee.networkBuckets.base + max(0, t.pointee.protected.index(of: p.destination))
        n.pointee.refill(seconds: Float(age(ms, since: n.pointee.lastSeen)) / 1000, rate: t.pointee.rstNetworkRate,
                         burst: t.pointee.rstNetworkBurst, holdFloor: hold)
        n.pointee.lastSeen = ms
        return (b, n)
    }

    /// The first seconds after start learn fast: flows older than the engine end with RSTs it
    /// cannot track, and their rate is the baseline to learn. Detection is on all along, so a
    /// flood at start is still cut (its first window starts the attack and freezes learning).
    @inline(__always)
    private func learningRate(_ ms: UInt32) -> Float {
        hot.pointee.started && age(ms, since: hot.pointee.startMs) < tuning.pointee.rstWarmupMs ? 0.5 : 0.05
    }

    /// Counts a RST against its prefix and network and watches both for an attack.
    @inline(__always)
    private func count(_ b: UnsafeMutablePointer<RSTBudget>, _ n: UnsafeMutablePointer<RSTBudget>, _ p: ParsedPacket,
                       _ ms: UInt32, now: Nanoseconds) {
        let t = tuning.base
        let alpha = learningRate(ms)
        b.pointee.countUntracked(ms, alpha: alpha, slack: t.pointee.rstHoldRate, frozen: b.pointee.attackActive)
        n.pointee.countUntracked(ms, alpha: alpha, slack: t.pointee.rstHoldRate, frozen: n.pointee.attackActive)
        watch(b, floor: t.pointee.rstAttackFloor, network: -1, ms, now: now)
        if n.pointee.wide {
            watch(n, floor: t.pointee.rstNetworkAttackFloor, network: n - t.pointee.networkBuckets.base, ms, now: now)
        }
    }

    /// Starts an RST attack on a prefix or network whose window passed its threshold, and keeps
    /// one going while its windows reach half of it.
    @inline(__always)
    private func watch(_ s: UnsafeMutablePointer<RSTBudget>, floor: Float, network: Int, _ ms: UInt32, now: Nanoseconds) {
        let limit = s.pointee.threshold(factor: tuning.pointee.rstAttackFactor, floor: floor)
        let c = Float(s.pointee.count)
        if s.pointee.attackActive {
            if c >= (limit / 2).rounded(.up) { s.pointee.lastAboveMs = ms }
        } else if c > limit {
            startRSTAttack(s, network: network, ms, now: now)
        }
    }

    @inline(never)
    private func startRSTAttack(_ s: UnsafeMutablePointer<RSTBudget>, network: Int, _ ms: UInt32, now: Nanoseconds) {
        s.pointee.attackActive = true
        s.pointee.lastAboveMs = ms
        // The hold bucket starts empty: what passed before the attack was seen is its burst.
        s.pointee.hold = 0
        let key = s.pointee.key
        if let i = rstActive.firstIndex(where: { sameBytes($0.key, key) && $0.network == network }) {
            rstActive[i].lastAboveMs = ms
            return
        }
        guard rstActive.count < Engine.maxActiveAttacks else { return }
        let cidr = network >= 0 ? networkPrefix(network, key)
            : CIDR(address: IPAddress(bytes: key), length: Engine.isV4(key) ? 120 : 64)
        rstActive.append(ActiveAttack(key: key, prefix: cidr, startedAt: now, lastAboveMs: ms, network: network))
        rstAttacksStarted &+= 1
        // The rate so far in this window; at least 50 ms of it, so the first packets of a
        // window do not read as an enormous rate.
        let secs = max(0.05, Float(age(ms, since: s.pointee.windowStart)) / 1000)
        emit(AttackEvent(kind: .started, vector: .rst, prefix: cidr, at: now, startedAt: now,
                         synackDropRate: 0, rstDropRate: Double(Float(s.pointee.count) / secs)))
    }

    private func networkPrefix(_ network: Int, _ key: SIMD16<UInt8>) -> CIDR {
        let all = Engine.networkPrefixes(policy)
        return network < all.count ? all[network] : CIDR(address: IPAddress(bytes: key), length: 128)
    }

    /// Once a second of packet time: ends RST attacks quiet for `attackQuietMs`, or whose budget
    /// is gone (evicted from a full table, or a policy change replaced the networks).
    func tickRSTAttacks(_ ms: UInt32) {
        var k = 0
        while k < rstActive.count {
            let a = rstActive[k]
            var slot: UnsafeMutablePointer<RSTBudget>?
            if a.network >= 0 {
                if a.network < max(1, tuning.pointee.protected.count) {
                    let n = tuning.pointee.networkBuckets.base + a.network
                    if sameBytes(n.pointee.key, a.key) { slot = n }
                }
            } else {
                let i = rstPrefixBuckets.find(a.key, hash: seed.hash(a.key))
                if i >= 0 { slot = rstPrefixBuckets.slots + i }
            }
            var lastAbove = a.lastAboveMs
            if let s = slot, s.pointee.attackActive, age(ms, since: s.pointee.lastAboveMs) < age(ms, since: lastAbove) {
                lastAbove = s.pointee.lastAboveMs
            }
            let gone = slot.map { !$0.pointee.attackActive } ?? true
            if gone || age(ms, since: lastAbove) >= Engine.attackQuietMs {
                var rate: Float = 0
                if let s = slot {
                    s.pointee.attackActive = false
                    rate = Float(s.pointee.count) / max(1, Float(age(ms, since: s.pointee.windowStart)) / 1000)
                }
                let at = a.startedAt + Int64(age(ms, since: Engine.msTime(a.startedAt))) * 1_000_000
                emit(AttackEvent(kind: .ended, vector: .rst, prefix: a.prefix, at: at, startedAt: a.startedAt,
                                 synackDropRate: 0, rstDropRate: Double(rate)))
                rstActive.swapAt(k, rstActive.count - 1)
                rstActive.removeLast()
            } else {
                k += 1
            }
        }
    }
}
