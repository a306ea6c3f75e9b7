#if canImport(Glibc)
import Glibc
#endif
import NFQueue
import PacketParser
import VerdictEngine
import Synchronization

/// One queue's packet path on its own thread: receive a batch → parse → decide → record the
/// verdict → flush. It owns its engine outright (the kernel's balancing hash sends both
/// directions of a host pair to the same queue), so nothing on this path takes a lock. Not
/// `Sendable`: it lives on its thread; the metrics thread reads its `figures` only.
final class Worker {
    let queue: UInt16
    let figures: WorkerFigures
    /// `figures`' own blocks, held here too so the packet path reaches them in one load.
    let counters: CounterBlock
    private let shared: AgentShared
    private let flushInterval: Int64
    private var engine: Engine
    private var policyGeneration: Int
    private var sides: SideMap
    /// Dry-run: every packet is accepted and what the engine said goes to the scoring pipeline.
    private let dryRun: DryRunRecorder?
    /// NFQA_TIMESTAMP is on CLOCK_REALTIME and the engine's clock must never jump: kernel stamps
    /// are moved onto the monotonic clock by this offset. It is re-read once per receive batch
    /// (two vDSO clock reads, no system call): refreshed only while idle, a realtime step (NTP,
    /// an operator) under sustained load would shift engine time by the step for as long as the
    /// load lasts, aging pending SYNs out (step forward) or freezing time (step back). A stamp
    /// taken before a step that lands in the same batch is still off by the step, so engine time
    /// is also clamped to [last time, this batch's monotonic receive time]: never backwards,
    /// never ahead of now.
    private var realtimeToMonotonic: Int64 = 0
    private var lastTime: Int64 = 0
    private var lastPublish: Int64 = 0
    private var lastDrain: Int64 = 0
    private var fullSince: Int64 = 0
    private var lastOverloadReport: Int64 = 0

    /// `state = conntrack` (fixed at start): the facts the feed posts, the SYN-ACKs whose verdict
    /// waits for their state, how long they may wait, and what is counted about them.
    let mailbox: ConntrackMailbox?
    private var hold: HoldQueue
    private let holdWait: Int64
    let holdCounters: CounterBlock
    private var replicationHealthy = true
    private var settled: [HoldQueue.Held] = []

    init(queue: UInt16, shared: AgentShared, seed: UInt64, mailbox: ConntrackMailbox? = nil) {
        self.queue = queue
        figures = WorkerFigures(queue: queue)
        counters = figures.counters
        holdCounters = figures.holdCounters
        self.shared = shared
        self.flushInterval = shared.settings.flushInterval
        let (policy, generation) = shared.currentPolicy()
        engine = Engine(policy: policy, seed: seed)
        // Inline, the first packets must not wait for the tables' pages: back them all now.
        engine.prefault()
        policyGeneration = generation
        sides = SideMap(inside: policy.insideInterfaces, outside: policy.outsideInterfaces)
        dryRun = shared.settings.dryRun ? DryRunRecorder(policy: policy) : nil
        let conntrack = mailbox != nil
        self.mailbox = mailbox
        // Held packets occupy the kernel queue: at most half of it, so the other half still takes
        // what arrives meanwhile (a full queue fails open, unseen).
        hold = HoldQueue(capacity: conntrack ? max(16, Int(shared.settings.queueMaxLength) / 2) : 1)
        holdWait = Int64(policy.conntrackWait * 1e9)
    }

    /// Seeds flows established before the agent started into this worker's engine; called
    /// before `run`, so on the thread that made the worker. How many the engine took.
    func seedEstablished(_ flows: [EstablishedSeeds.Flow], at now: Int64) -> Int {
        var n = 0
        for f in flows where engine.seedEstablished(protectedEnd: f.protectedEnd, port: f.port, peer: f.peer,
                                                    peerPort: f.peerPort, at: now) {
            n += 1
        }
        return n
    }

    /// Serves the queue until the agent stops. `socket` is the kernel's queue, or in unit tests
    /// a scripted one (`QueueTransport`).
    func run(_ socket: any QueueTransport) {
        let receiver = PacketReceiver(socket)
        let batcher = VerdictBatcher(socket, capacity: receiver.batchCapacity)
        var parsed = ParsedPacket()
        while !shared.stopping {
            let wait = batcher.pending == 0
            let result: IOResult<Int>
            do {
                if wait, let mailbox {
                    // Conntrack facts and held packets' deadlines wake the worker too.
                    waitForWork(socket.fd, mailbox)
                    result = try receiver.receive(wait: false)
                } else {
                    result = try receiver.receive(wait: wait)
                }
            } catch {
                // Every packet we received already has its verdict recorded; send them, report,
                // and keep serving: a transient error must not take the queue (and the router's
                // SYN-ACK protection) down.
                batcher.flush()
                shared.logger.error("receive-error", [("queue", .from(Int(queue))), ("error", .string("\(error)"))])
                usleep(10_000)
                continue
            }
            counters.add(WorkerCounter.receiveCalls.rawValue)
            switch result {
            case .wouldBlock:
                // Drained (or the receive timeout passed while idle): nothing may wait longer.
                batcher.flush()
                idle()
            case .processed(let n):
                process(receiver, batcher, &parsed)
                let now = monotonicNanoseconds()
                if n < receiver.batchCapacity || now - batcher.oldestPending >= flushInterval {
                    batcher.flush()
                }
                watchBacklog(full: n == receiver.batchCapacity, now)
                afterBatch(now)
            }
            if mailbox != nil { serviceConntrack(batcher) }
            publish(receiver, batcher)
        }
        // Shutdown: take what is already in the socket, give each its verdict, then unbind. The
        // kernel drops packets still queued to a socket that unbinds or closes, so draining first
        // is what keeps "exactly one verdict per packet" true at exit. Unless --keep-rules, the
        // agent removed the queueing rules before stopping us, so nothing new arrives; with
        // --keep-rules, from the unbind on the rule's bypass accepts in the kernel.
        var drained = 0
        while drained < 1_000_000 {
            guard case .processed(let n)? = try? receiver.receive(wait: false), n > 0 else { break }
            process(receiver, batcher, &parsed)
            batcher.flush()
            drained += n
        }
        // Held packets are still queued in the kernel: each gets its verdict as if its wait ended.
        settled.removeAll(keepingCapacity: true)
        hold.takeAll(into: &settled)
        for h in settled { _ = settle(h, final: true, batcher) }
        batcher.holdFloor = nil
        batcher.flush()
        publish(receiver, batcher)
        socket.unbind()
        socket.close()
        if let dryRun { shared.finishDryRun(dryRun) }
    }

    @inline(__always)
    private func process(_ receiver: PacketReceiver, _ batcher: VerdictBatcher, _ parsed: inout ParsedPacket) {
        let arrival = monotonicNanoseconds()
        realtimeToMonotonic = realtimeNanoseconds() &- arrival
        receiver.forEachPacket { packet in
            guard packet.decoded else {
                // Cannot be judged; it gets its own accept now rather than waiting for whatever
                // verdict a later batch would sweep it into.
                counters.add(WorkerCounter.received.rawValue)
                counters.add(WorkerCounter.accepted.rawValue)
                batcher.record(packet.id, .accept, now: arrival)
                return
            }
            PacketParser.parse(packet.payload, link: .raw, into: &parsed)
            var t = packet.timestamp != 0 ? min(packet.timestamp &- realtimeToMonotonic, arrival) : arrival
            if t < lastTime { t = lastTime }
            lastTime = t
            let side = sides.side(in: packet.inInterface, out: packet.outInterface)
            let decision = engine.decide(parsed, at: t, side: side)
            if decision.reason == .stateAwaited {
                counters.add(WorkerCounter.received.rawValue)
                if packet.isTruncated { counters.add(WorkerCounter.truncated.rawValue) }
                holdPacket(HoldQueue.Held(id: dryRun == nil ? packet.id : nil, packet: parsed, heldAt: arrival), batcher)
                if dryRun != nil { batcher.record(packet.id, .accept, now: arrival) }
                return
            }
            counters.add(WorkerCounter.received.rawValue)
            counters.add(WorkerCounter.slot(decision.reason, decision.verdict))
            if packet.isTruncated { counters.add(WorkerCounter.truncated.rawValue) }
            if decision.verdict == .drop, dryRun == nil {
                counters.add(WorkerCounter.dropped.rawValue)
                batcher.record(packet.id, .drop, now: arrival)
            } else {
                if decision.verdict == .drop { counters.add(WorkerCounter.wouldDrop.rawValue) }
                counters.add(WorkerCounter.accepted.rawValue)
                batcher.record(packet.id, .accept, now: arrival)
            }
            dryRun?.observe(parsed, at: t, decision: decision)
        }
    }

    // MARK: - Holding (state = conntrack)

    /// A SYN-ACK without state yet: its verdict waits (up to `ct_wait`) for its conntrack entry.
    private func holdPacket(_ h: HoldQueue.Held, _ batcher: VerdictBatcher) {
        guard holdWait > 0 else { _ = settle(h, final: true, batcher); return }
        holdCounters.add(HoldCounter.held.rawValue)
        if let out = hold.hold(h) {
            // The budget is full: the oldest has waited longest, it is judged now.
            holdCounters.add(HoldCounter.budget.rawValue)
            _ = settle(out, final: true, batcher)
        }
        // From now on no accept batch may reach the held id.
        batcher.holdFloor = hold.oldestID
    }

    /// Judges a held packet again; when its decision is final, records its verdict. Returns
    /// whether it left the hold.
    private func settle(_ h: HoldQueue.Held, final: Bool, _ batcher: VerdictBatcher) -> Bool {
        let now = monotonicNanoseconds()
        if now > lastTime { lastTime = now }
        let d = engine.settle(h.packet, at: lastTime, final: final)
        if d.reason == .stateAwaited { return false }
        let matched = d.reason == .solicitedConntrack || d.reason == .solicitedSynack
        if matched { holdCounters.add(HoldCounter.matched.rawValue) }
        else {
            if final { holdCounters.add(HoldCounter.expired.rawValue) }
            shared.conntrackUnmatched.add(1, ordering: .relaxed)
        }
        let waited = max(0, now - h.heldAt)
        holdCounters.add(HoldCounter.waitSumNanoseconds.rawValue, UInt64(waited))
        holdCounters.add(HoldCounter.bucket(waited))
        counters.add(WorkerCounter.slot(d.reason, d.verdict))
        if let id = h.id {
            if d.verdict == .drop {
                counters.add(WorkerCounter.dropped.rawValue)
                batcher.recordHeld(id, .drop, now: now)
            } else {
                counters.add(WorkerCounter.accepted.rawValue)
                batcher.recordHeld(id, .accept, now: now)
            }
        } else {
            // Dry-run: the packet was accepted when it came; only its decision waited.
            if d.verdict == .drop { counters.add(WorkerCounter.wouldDrop.rawValue) }
            counters.add(WorkerCounter.accepted.rawValue)
        }
        dryRun?.observe(h.packet, at: lastTime, decision: d)
        return true
    }

    /// Between batches: the engine learns the facts the feed posted, held packets whose state
    /// arrived are accepted, those whose wait ended are judged, and the batcher's floor follows.
    private func serviceConntrack(_ batcher: VerdictBatcher) {
        guard let mailbox else { return }
        let healthy = shared.replicationHealthy.load(ordering: .acquiring)
        if healthy != replicationHealthy {
            replicationHealthy = healthy
            engine.setReplicationHealthy(healthy)
        }
        let now = monotonicNanoseconds()
        if mailbox.hasFacts {
            let facts = mailbox.take()
            for f in facts { engine.learn(f, at: max(lastTime, now)) }
            if !facts.isEmpty, !hold.isEmpty { hold.recheck { settle($0, final: false, batcher) } }
        }
        if !hold.isEmpty {
            settled.removeAll(keepingCapacity: true)
            hold.takeExpired(at: now, wait: holdWait, into: &settled)
            for h in settled { _ = settle(h, final: true, batcher) }
        }
        batcher.holdFloor = hold.oldestID
    }

    /// Blocks until the queue has packets, the feed posted facts, or the oldest held packet's
    /// wait ends (at most 100 ms, the idle cadence of the plain receive).
    private func waitForWork(_ queueFD: Int32, _ mailbox: ConntrackMailbox) {
        var timeout: Int64 = 100
        if let oldest = hold.oldest {
            let left = oldest.heldAt + holdWait - monotonicNanoseconds()
            timeout = max(0, min(timeout, (left + 999_999) / 1_000_000))
        }
        var fds = [pollfd(fd: queueFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: mailbox.eventFD, events: Int16(POLLIN), revents: 0)]
        _ = poll(&fds, 2, Int32(timeout))
    }

    /// Receive batches that keep coming back full mean the socket never drains: the agent is
    /// behind, the kernel queue is filling, and once it is full FAIL_OPEN lets packets through
    /// unjudged (no kernel counter shows it). Past `settings.overloadAfter` of that, the enforcement arms
    /// the kernel check for the protected networks, whatever the engines have detected.
    private func watchBacklog(full: Bool, _ now: Int64) {
        guard full, shared.settings.overloadAfter > 0 else { fullSince = 0; return }
        if fullSince == 0 { fullSince = now; return }
        guard now - fullSince >= shared.settings.overloadAfter, now - lastOverloadReport >= 1_000_000_000 else { return }
        lastOverloadReport = now
        counters.add(WorkerCounter.overloads.rawValue)
        shared.enforcement.overloaded(queue: queue, policy: engine.policy, backlogFor: now - fullSince)
    }

    private func afterBatch(_ now: Int64) {
        // At most once a millisecond: draining hands back the engine's event array, which costs an
        // allocation even when it is empty, and arming within a millisecond is soon enough.
        guard now - lastDrain >= 1_000_000 else { return }
        lastDrain = now
        let events = engine.drainAttackEvents()
        if !events.isEmpty {
            counters.add(WorkerCounter.attackEvents.rawValue, UInt64(events.count))
            shared.enforcement.submit(events, queue: queue, policy: engine.policy)
        }
        checkPolicy()
    }

    private func idle() {
        // Packet time must move while the queue is quiet, or an attack would never end.
        let t = monotonicNanoseconds()
        if t > lastTime { lastTime = t }
        engine.advance(to: lastTime)
        afterBatch(t)
    }

    private func checkPolicy() {
        let g = shared.policyGeneration
        guard g != policyGeneration else { return }
        let (policy, generation) = shared.currentPolicy()
        engine.updatePolicy(policy)
        sides = SideMap(inside: policy.insideInterfaces, outside: policy.outsideInterfaces)
        policyGeneration = generation
    }

    private func publish(_ receiver: PacketReceiver, _ batcher: VerdictBatcher) {
        let now = monotonicNanoseconds()
        guard now - lastPublish > 50_000_000 || shared.stopping else { return }
        lastPublish = now
        counters.set(WorkerCounter.enobufs.rawValue, UInt64(receiver.enobufs))
        counters.set(WorkerCounter.netlinkErrors.rawValue, UInt64(receiver.netlinkErrors))
        counters.set(WorkerCounter.verdictSendErrors.rawValue, UInt64(batcher.sendErrors))
        counters.set(WorkerCounter.sendCalls.rawValue, UInt64(batcher.sendCalls))
        counters.set(WorkerCounter.lostVerdicts.rawValue, UInt64(batcher.lostVerdicts))
        counters.set(WorkerCounter.undecoded.rawValue, UInt64(receiver.undecodedPackets))
        if let e = batcher.takeSendError() {
            shared.logger.error("verdict-send-failed", [("queue", .from(Int(queue))), ("error", .string("\(e)")),
                                                       ("lost_verdicts_total", .from(batcher.lostVerdicts))])
        }
        let s = engine.stats
        counters.set(WorkerCounter.tableOccupancy.rawValue, UInt64(s.flowEntries))
        counters.set(WorkerCounter.tableCapacity.rawValue, UInt64(s.flowCapacity))
        counters.set(WorkerCounter.tableEvictions.rawValue, s.flowEvictions)
        counters.set(WorkerCounter.bucketEvictions.rawValue, s.bucketEvictions)
        counters.set(WorkerCounter.activeAttacks.rawValue, UInt64(s.activeAttacks))
        counters.set(WorkerCounter.rstAttacksStarted.rawValue, s.rstAttacksStarted)
        if let mailbox {
            holdCounters.set(HoldCounter.holding.rawValue, UInt64(hold.count))
            holdCounters.set(HoldCounter.entries.rawValue, UInt64(s.conntrackEntries))
            holdCounters.set(HoldCounter.evictions.rawValue, s.conntrackEvictions)
            holdCounters.set(HoldCounter.mailboxDropped.rawValue, mailbox.dropped.load(ordering: .relaxed))
        }
    }
}

/// What the metrics thread reads of one worker: its queue and its counters.
final class WorkerFigures: Sendable {
    let queue: UInt16
    let counters = CounterBlock(count: WorkerCounter.slotCount)
    let holdCounters = CounterBlock(count: HoldCounter.slotCount)

    init(queue: UInt16) { self.queue = queue }
}

/// inside_ifaces / outside_ifaces resolved to interface indexes (the kernel sends indexes).
struct SideMap {
    private var inside: [UInt32] = []
    private var outside: [UInt32] = []

    init(inside: [String], outside: [String]) {
        self.inside = inside.compactMap { let i = if_nametoindex($0); return i == 0 ? nil : i }
        self.outside = outside.compactMap { let i = if_nametoindex($0); return i == 0 ? nil : i }
    }

    var isEmpty: Bool { inside.isEmpty && outside.isEmpty }

    /// Where a packet came from: its input interface when it has one; a packet the router itself
    /// sends (no input) is judged by where it leaves: leaving outward means it came from inside.
    @inline(__always)
    func side(in indev: UInt32, out outdev: UInt32) -> Side {
        if isEmpty { return .unknown }
        if indev != 0 {
            if outside.contains(indev) { return .outside }
            if inside.contains(indev) { return .inside }
            return .unknown
        }
        if outdev != 0 {
            if outside.contains(outdev) { return .inside }
            if inside.contains(outdev) { return .outside }
        }
        return .unknown
    }
}
