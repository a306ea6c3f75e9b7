import PacketParser

/// Ingress-only mode: with no SYN to match (asymmetric routing), an inbound SYN-ACK is scored from
/// evidence on the packet and the victim's context.
extension Engine {
    /// Scores an inbound SYN-ACK nobody can match to a SYN (0-100): evidence on the packet itself
    /// (port outside the clients' ephemeral range 20, options no protected SYN would draw 30, a
    /// reflector's retransmissions 15 then 30, from the fourth copy 60 on a prefix whose context
    /// signs fired within the SYN-ACK horizon) plus the victim's context (up to 35). The weights
    /// keep these promises at the default threshold of 60: with no attack, a legitimate SYN-ACK
    /// needs the options sign and repeated retransmissions together to be dropped; during an
    /// attack neither the port sign alone (Windows clients use 49152-65535, beyond Linux's range)
    /// nor one retransmission (a lost ACK) drops one; context alone never drops anything. Why
    /// each sign weighs what it does from one vantage point, and the figures:
    /// docs/ingress-only.md.
    func scoreSynack(_ p: ParsedPacket, _ key: FlowKey, _ ms: UInt32, now: Nanoseconds) -> Decision {
        var score = 0
        if !tuning.pointee.ephemeralPorts.contains(p.destinationPort) { score += 20 }
        if unlikeProfile(p.optionSignature) { score += 30 }
        score += isnRepeat(p, key, ms)
        score += context(p, ms)
        let s = UInt8(min(100, score))
        if score >= tuning.pointee.scoreThreshold {
            let d = drop(.synackScoreDrop, p, score: s)
            if d.verdict == .drop { noteDrop(p.destination, ms, now: now) }
            return d
        }
        return Decision(.accept, .synackScorePass, score: s)
    }

    /// A server echoes SACK-permitted, timestamps and window scale only when the SYN offered
    /// them; a SYN-ACK with none of the options the protected side's SYNs carry (default: all
    /// three, as Linux, macOS and Windows clients send) answers a SYN someone else crafted.
    func unlikeProfile(_ s: TCPOptionSignature) -> Bool {
        if s.sackPermitted || s.timestamps || s.windowScale != nil { return false }
        guard hot.pointee.synsSeen > 0 else { return true }
        let expected = (hot.pointee.synsWithSACK * 2 > hot.pointee.synsSeen ? 1 : 0) + (hot.pointee.synsWithTS * 2 > hot.pointee.synsSeen ? 1 : 0)
            + (hot.pointee.synsWithWS * 2 > hot.pointee.synsSeen ? 1 : 0)
        return expected >= 2
    }

    /// Points for a same-ISN SYN-ACK seen again at a reflector's retransmission spacing: 15 for
    /// the first repeat (a legitimate server retransmits once when the client's ACK is lost),
    /// 30 from the second on (a Linux reflector retransmits 5 times: 1, 3, 7, 15, 31 s).
    /// From the fourth copy (7 s and more after the first) on a prefix whose context signs (rate
    /// or reflectors) fired within the SYN-ACK horizon: 60. A legitimate server sends a fourth
    /// copy only after three losses in a row (~3 % each in the lab: ~0.003 %), a reflector to
    /// every victim that does not answer; and a reflector's copies outlast the rate signs by up
    /// to 31 s (those decay within seconds of the last forged SYN), so the signs are remembered
    /// for the horizon.
    func isnRepeat(_ p: ParsedPacket, _ key: FlowKey, _ ms: UInt32) -> Int {
        let h = key.hash(seed)
        var i = seenSynacks.find(key, hash: h)
        if i >= 0 && age(ms, since: seenSynacks.slots[i].lastSeen) <= synackHorizonMs {
            let e = seenSynacks.slots[i]
            if e.isn == p.sequence {
                var repeats = e.repeats
                if age(ms, since: e.lastSeen) >= Engine.retransmitSpacingMs {
                    repeats = min(repeats &+ 1, 100)
                    seenSynacks.slots[i].lastSeen = ms
                    seenSynacks.slots[i].repeats = repeats
                }
                if repeats >= 3 && recentlyAttacked(p.destination, ms) { return 60 }
                return repeats == 0 ? 0 : repeats == 1 ? 15 : 30
            }
        }
        if i < 0 { i = seenSynacks.claim(hash: h, now: ms, idleLimit: synackHorizonMs, seed: seed) }
        seenSynacks.slots[i] = SeenSynack(a0: key.a0, a1: key.a1, isn: p.sequence, lastSeen: ms,
                                          p0: key.p0, p1: key.p1, repeats: 0)
        return 0
    }

    /// Whether the victim prefix's context signs fired within the SYN-ACK horizon, or a SYN-ACK
    /// attack is on there.
    func recentlyAttacked(_ victim: IPAddress, _ ms: UInt32) -> Bool {
        let key = Engine.prefix(victim.bytes)
        let i = prefixRates.find(key, hash: seed.hash(key))
        guard i >= 0 else { return false }
        let r = prefixRates.slots[i]
        return r.attackActive || r.contextSeen && age(ms, since: r.lastContextMs) <= synackHorizonMs
    }

    /// Victim context: SYN-ACK rate to the address and to its prefix against their moving
    /// baselines, and how many distinct servers answer the prefix (carpet bombing).
    func context(_ p: ParsedPacket, _ ms: UInt32) -> Int {
        // One bit of a 128-bit map per reflector (hashed with the secret seed): a distinct-count
        // estimate that needs no memory per reflector.
        let h = seed.hash(p.source.bytes)
        let bit = UInt64(1) << (h & 63)
        let reflector = (h >> 6) & 1 == 0 ? SIMD2<UInt64>(bit, 0) : SIMD2<UInt64>(0, bit)
        var score = 0
        let v = touch(victimRates, p.destination.bytes, ms)
        victimRates.slots[v].synacks &+= 1
        let rv = victimRates.slots[v]
        if max(rv.synackRate, Float(rv.synacks)) > 4 * rv.baseline + victimFloor { score += 20 }
        let x = touch(prefixRates, Engine.prefix(p.destination.bytes), ms)
        prefixRates.slots[x].synacks &+= 1
        prefixRates.slots[x].reflectors |= reflector
        let rx = prefixRates.slots[x]
        var prefixSigns = 0
        if max(rx.synackRate, Float(rx.synacks)) > 4 * rx.baseline + prefixFloor { prefixSigns += 20 }
        let distinct = rx.reflectors[0].nonzeroBitCount + rx.reflectors[1].nonzeroBitCount
        if distinct >= 64 || rx.lastReflectors >= 64 { prefixSigns += 15 }
        if prefixSigns > 0 {
            prefixRates.slots[x].lastContextMs = ms
            prefixRates.slots[x].contextSeen = true
        }
        return min(35, score + prefixSigns)
    }
}
