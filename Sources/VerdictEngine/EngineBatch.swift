import PacketParser

/// LLVM's prefetch intrinsic. Swift exposes no prefetch, and `_mm_prefetch` is a C macro that
/// does not import; this binds the intrinsic directly (it compiles to `prefetcht0`, checked by
/// the engine bench). Arguments: address, 0 = read / 1 = write, locality 0-3, 1 = data cache.
@_silgen_name("llvm.prefetch.p0")
func llvmPrefetch(_ address: UnsafeRawPointer, _ write: Int32, _ locality: Int32, _ cacheType: Int32)

extension Engine {
    /// Decides a batch of packets exactly as `decideObserved` one by one would, in order, while
    /// fetching each packet's flow-table lines a few packets ahead: the tag vectors first, then
    /// the slots they point at. With a table of up to ~100 MB nearly every new flow's lookup is
    /// a cache miss; overlapping them is what makes line rate reachable (NFQUEUE hands packets
    /// over in batches anyway). `times[i]` and `sides[i]` belong to `packets[i]`.
    public func decideObserved(batch packets: UnsafeBufferPointer<ParsedPacket>,
                               at times: UnsafeBufferPointer<Nanoseconds>, sides: UnsafeBufferPointer<Side>,
                               into decisions: UnsafeMutableBufferPointer<Decision>) {
        precondition(times.count >= packets.count && sides.count >= packets.count && decisions.count >= packets.count)
        let n = packets.count
        // Tags 8 packets ahead, slots 4 ahead: about two DRAM latencies of decisions.
        let tagsAhead = 8, slotsAhead = 4
        var i = -tagsAhead
        while i < n {
            let a = i + tagsAhead
            if a < n { prefetchTags(packets[a]) }
            let b = i + slotsAhead
            if b >= 0 && b < n { prefetchSlots(packets[b]) }
            if i >= 0 { decisions[i] = decideObserved(packets[i], at: times[i], side: sides[i]) }
            i += 1
        }
    }

    @inline(__always)
    private func flowHash(_ p: ParsedPacket) -> UInt64 {
        var s0 = false
        return FlowKey(p, senderIs0: &s0).hash(seed)
    }

    @inline(__always)
    func prefetchTags(_ p: ParsedPacket) {
        guard p.hasTCP else { return }
        let (g1, g2, _) = flows.locate(flowHash(p))
        llvmPrefetch(UnsafeRawPointer(flows.tags + g1), 0, 3, 1)
        llvmPrefetch(UnsafeRawPointer(flows.tags + g2), 0, 3, 1)
    }

    @inline(__always)
    func prefetchSlots(_ p: ParsedPacket) {
        guard p.hasTCP else { return }
        let (g1, g2, tag) = flows.locate(flowHash(p))
        let t = SIMD16<UInt8>(repeating: tag)
        var m1 = laneBits(flows.tags[g1] .== t)
        var m2 = laneBits(flows.tags[g2] .== t)
        if m1 | m2 == 0 {
            // Not there: a SYN will claim an empty lane of the first group.
            let empty = laneBits(flows.tags[g1] .== SIMD16<UInt8>(repeating: 0x80))
            if empty != 0 { m1 = 1 << empty.trailingZeroBitCount }
        }
        while m1 != 0 {
            llvmPrefetch(UnsafeRawPointer(flows.slots + (g1 &* 16 &+ m1.trailingZeroBitCount)), 1, 3, 1)
            m1 &= m1 &- 1
        }
        while m2 != 0 {
            llvmPrefetch(UnsafeRawPointer(flows.slots + (g2 &* 16 &+ m2.trailingZeroBitCount)), 1, 3, 1)
            m2 &= m2 &- 1
        }
    }
}
