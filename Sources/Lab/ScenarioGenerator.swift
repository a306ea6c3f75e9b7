import PacketParser

/// Generates a scenario's frames in timestamp order, streaming: memory holds only the flows
/// still alive (a min-heap of next-frame times), never the capture.
///
/// The capture point is the protected site's border router, seeing both directions (or, for the
/// `-ingress` variants, the inbound one only). Time runs from 2026-01-01T00:00:00Z. Traffic is
/// spawned over `spawnSeconds`, attacks inside a window of it; flows still alive then run to
/// their natural end (a reflector's last retransmission comes 31 s after its first SYN-ACK).
///
/// Score every scenario with `--protect 198.18.2.0/24 --protect 2001:db8:2::/64`. Address plan:
/// protected clients at .2-.99 (IPv6: IID ::2-::63), servers at .100-.119; internet peers in
/// 198.18.1.0/24, 203.0.113.0/24, 198.51.100.0/24 and 2001:db8:1::/64; reflectors and RST-flood
/// sources in 198.19.0.0/16 and 2001:db8:ff::/48 only, so no attack 4-tuple meets a legit one.
/// VLAN tags follow the protected host (low byte mod 8: 5-6 → 802.1Q 100, 7 → 802.1ad 300/100).
///
/// What the labels promise, and what the engine (issue 3) was seen to decide on them:
/// - `legit`: real conversations. Every inbound legit SYN-ACK answers a SYN seen earlier
///   (ack = ISN + 1), every legit RST is a refusal (ack = ISN + 1) or an abort at the exact
///   RCV.NXT, at most one per flow. Symmetric mode drops none. Legit clients include Windows
///   and macOS stacks whose ephemeral ports (49152-65535) lie partly outside Linux's range:
///   ingress-only scoring meets them as they are.
/// - `attack-synack`: reflected SYN-ACKs; reflectors retransmit on their own schedule (Linux
///   0, 1, 3, 7, 15, 31 s with the same ISN; fewer when tuned, none under SYN cookies; Windows
///   0, 3, 9 s) unless the victim answers with a RST.
/// - `attack-backscatter`: a live protected Linux host's bare RST (seq = the SYN-ACK's ack)
///   answering a reflected SYN-ACK; after it the reflector stops. Honest host, attack-made
///   packet: see `FrameLabel.attackBackscatter`.
/// - `attack-rst`: spoofed RSTs (random ports, sequence numbers, TTLs), 60% at three hosts
///   per family, in a 12 s burst: only per-destination rate limits can judge them.
/// - `attack-blind-reset`: forged RSTs on live long-lived sessions, 30% inside the receiver's
///   window (never exact), 70% well outside it. With the default `track = handshake` they look
///   like RSTs on tracked or unknown flows; only `-D track=full` can judge the window.
///
/// Sizing: every flow's frames are planned when it starts, so each traffic component stops
/// starting flows once its share of `packets` is committed; the total comes out at `packets`
/// plus at most one flow per component (long-lived sessions are paced to their share instead).
public final class ScenarioGenerator {
    public let scenario: Scenario
    public let seed: UInt64
    public let packets: Int
    public let link: LinkType
    /// The RST flood's rate, length and spread, when a test sets them (else sized from `packets`).
    public let flood: RSTFloodShape?

    public static let epoch: Int64 = 1_767_225_600 * 1_000_000_000
    static let ms: Int64 = 1_000_000
    static let second: Int64 = 1_000_000_000
    /// Seconds over which flows are started.
    public static let spawnSeconds: Int64 = 60

    // The generator is single-threaded and never reaches one of these through two overlapping
    // accesses; debug builds (the test suite) keep the runtime exclusivity checks to prove it,
    // release builds drop them, as they cost ~10% of generation time.
#if DEBUG
    private var rng: LabRandom
    private var heap = EventHeap()
    private var flows: [Flow] = []
    private var freeSlots: [Int32] = []
    private var spawners: [Spawner] = []
    private var frameBuffer = [UInt8](repeating: 0, count: 4096)
    private var stats = ScenarioStats()
    private var labelCounts = [Int](repeating: 0, count: FrameLabel.allCases.count)
#else
    @exclusivity(unchecked) private var rng: LabRandom
    @exclusivity(unchecked) private var heap = EventHeap()
    @exclusivity(unchecked) private var flows: [Flow] = []
    @exclusivity(unchecked) private var freeSlots: [Int32] = []
    @exclusivity(unchecked) private var spawners: [Spawner] = []
    @exclusivity(unchecked) private var frameBuffer = [UInt8](repeating: 0, count: 4096)
    @exclusivity(unchecked) private var stats = ScenarioStats()
    @exclusivity(unchecked) private var labelCounts = [Int](repeating: 0, count: FrameLabel.allCases.count)
#endif
    private var reflectors: ReflectorPool
    /// Per protected client: next ephemeral port offset, so a 4-tuple is not reused while the
    /// engine may still hold state for it.
    private var portCursor = [UInt16](repeating: 0, count: 512)

    public init(scenario: Scenario, seed: UInt64, packets: Int = 20_000, link: LinkType = .ethernet,
                flood: RSTFloodShape? = nil) {
        precondition(packets > 0)
        self.scenario = scenario
        self.seed = seed
        self.packets = packets
        self.link = link
        self.flood = flood
        rng = LabRandom(seed: seed)
        reflectors = ReflectorPool(count: 0, seed: seed)
        setUp()
    }

    // MARK: - sizing

    private struct Shares { var legit = 0.0, longLived = 0.0, forged = 0.0, carpet = 0.0, flood = 0.0 }

    private func shares() -> Shares {
        var s = Shares()
        switch scenario.kind {
        case .legit: s.legit = 1
        case .synackCarpet: s.legit = 0.25; s.carpet = 0.75
        case .rstFlood: s.legit = 0.3; s.flood = 0.7
        case .blindReset: s.legit = 0.4; s.longLived = 0.3; s.forged = 0.3
        case .mixed: s.legit = 0.25; s.longLived = 0.1; s.forged = 0.1; s.carpet = 0.4; s.flood = 0.15
        }
        return s
    }

    private func setUp() {
        let s = shares()
        let n = Double(packets)
        let d = ScenarioGenerator.spawnSeconds * ScenarioGenerator.second
        // Mean frames per flow, measured on a pilot sample drawn from its own seed.
        var pilot = LabRandom(seed: seed ^ 0x5eed_0f_7e57)
        if s.legit > 0 {
            var total = 0
            var f = Flow()
            for _ in 0..<400 {
                planSession(&f, start: 0, rng: &pilot, outbound: pilot.chance(0.65))
                total += f.script.count
            }
            let mean = Double(total) / 400
            addSpawner(.legit, budget: n * s.legit, mean: mean, from: 0, to: d)
        }
        if s.carpet > 0 {
            let meanFrames = 4.5
            let flowsWanted = n * s.carpet / meanFrames
            reflectors = ReflectorPool(count: Int(min(60_000, max(2_000, flowsWanted / 3))), seed: seed)
            addSpawner(.carpet, budget: n * s.carpet, mean: meanFrames, from: d * 15 / 100, to: d * 85 / 100)
        }
        if let shape = flood, s.flood > 0 {
            let from = Int64(shape.start * Double(ScenarioGenerator.second))
            addSpawner(.flood, budget: shape.rate * shape.seconds, mean: 1, from: from,
                       to: from + Int64(shape.seconds * Double(ScenarioGenerator.second)))
        } else if s.flood > 0 {
            // Floods are short and intense: enough to exceed per-victim and per-prefix budgets
            // at the default size.
            addSpawner(.flood, budget: n * s.flood, mean: 1, from: d * 30 / 100, to: d * 50 / 100)
        }
        for _ in 0..<(flood?.olderFlows ?? 0) {
            let slot = allocateFlow()
            planOlderFlow(&flows[Int(slot)])
            heap.push(time: flows[Int(slot)].script[0].time, slot: slot)
        }
        if s.longLived > 0 {
            let sessions = min(512, max(8, packets / 10_000))
            let perSession = n * s.longLived / Double(sessions)
            // An exchange is a request, a response and an ACK.
            let exchanges = max(4, perSession / 3)
            let forgedPerSession = n * s.forged / Double(sessions)
            let burstMean = max(10, forgedPerSession / exchanges)
            let burstChance = min(1, forgedPerSession / (burstMean * exchanges))
            for i in 0..<sessions {
                let slot = allocateFlow()
                // Staggered over the first two seconds, whatever their number.
                let start = ScenarioGenerator.epoch + Int64(i) * 2 * ScenarioGenerator.second / Int64(sessions)
                    + Int64(rng.below(1_000_000))
                planLongLived(&flows[Int(slot)], start: start, end: ScenarioGenerator.epoch + d,
                              exchangeGap: Double(d) / exchanges, burstMean: burstMean, burstChance: burstChance)
                heap.push(time: flows[Int(slot)].script[0].time, slot: slot)
            }
        }
    }

    private func addSpawner(_ kind: SpawnKind, budget: Double, mean: Double, from: Int64, to: Int64) {
        let rate = budget / mean / Double(to - from)   // flows per nanosecond
        spawners.append(Spawner(kind: kind, meanGap: 1 / max(rate, 1e-18), budget: Int(budget.rounded()),
                                stop: from + (to - from) * 3 / 2))
        heap.push(time: ScenarioGenerator.epoch + from, slot: -Int32(spawners.count))
    }

    // MARK: - run

    /// Calls `emit` with each frame (valid only during the call), its timestamp in nanoseconds
    /// since the epoch, and its label, in timestamp order. Call once.
    public func run(_ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows -> ScenarioStats {
        while let (time, slot) = heap.pop() {
            if slot < 0 {
                try spawn(Int(-slot - 1), now: time, emit)
                continue
            }
            let i = Int(slot)
            try emitStep(i, emit)
            if let next = advance(i) {
                heap.push(time: next, slot: slot)
            } else {
                freeSlots.append(slot)
            }
        }
        for l in FrameLabel.allCases where labelCounts[Int(l.rawValue)] > 0 {
            stats.perLabel[l] = labelCounts[Int(l.rawValue)]
        }
        return stats
    }

    private func allocateFlow() -> Int32 {
        if let s = freeSlots.popLast() { return s }
        flows.append(Flow())
        return Int32(flows.count - 1)
    }

    private func spawn(_ k: Int, now: Int64, _ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows {
        var sp = spawners[k]
        defer { spawners[k] = sp }
        guard sp.committed < sp.budget, now - ScenarioGenerator.epoch < sp.stop else { return }
        switch sp.kind {
        case .legit:
            let slot = allocateFlow()
            planSession(&flows[Int(slot)], start: now, rng: &rng, outbound: rng.chance(0.65))
            sp.committed += flows[Int(slot)].script.count
            heap.push(time: now, slot: slot)
        case .carpet:
            let slot = allocateFlow()
            planReflection(&flows[Int(slot)], start: now)
            sp.committed += Int(flows[Int(slot)].plannedFrames)
            heap.push(time: now, slot: slot)
        case .flood:
            try emitFloodRST(now: now, emit)
            sp.committed += 1
        }
        let gap = Int64(rng.exponential(mean: sp.meanGap)) + 1
        heap.push(time: now + gap, slot: -Int32(k + 1))
    }

    // MARK: - emission

    private func write(_ spec: FrameSpec, time: Int64, label: FrameLabel,
                       _ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows {
        if scenario.ingressOnly && !LabAddresses.isProtected(spec.destination) { return }
        var s = spec
        // Capture on the border router's outside link: inbound frames come from the upstream
        // router, outbound ones from ours.
        if LabAddresses.isProtected(spec.destination) {
            s.sourceMAC = 0x02_00_5e_00_00_01; s.destinationMAC = 0x02_00_5e_00_00_fe
        } else {
            s.sourceMAC = 0x02_00_5e_00_00_fe; s.destinationMAC = 0x02_00_5e_00_00_01
        }
        let n = FrameBuilder.build(s, link: link, into: &frameBuffer)
        if stats.frames == 0 { stats.firstTimestamp = time }
        stats.lastTimestamp = time
        stats.frames += 1
        labelCounts[Int(label.rawValue)] += 1
        try frameBuffer.withUnsafeBytes { try emit(UnsafeRawBufferPointer(rebasing: $0[0..<n]), time, label) }
    }

    private func emitStep(_ i: Int, _ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows {
        if flows[i].kind == .reflection {
            try emitReflection(i, emit)
            return
        }
        let step = flows[i].script[flows[i].cursor]
        let spec = sessionFrame(&flows[i], step)
        try write(spec, time: step.time, label: step.forged ? .attackBlindReset : .legit, emit)
    }

    /// The time of the flow's next frame, or nil when it is done.
    private func advance(_ i: Int) -> Int64? {
        if flows[i].kind == .reflection {
            flows[i].reflIndex += 1
            guard flows[i].reflIndex < flows[i].plannedFrames else { return nil }
            let t = reflectionTime(i)
            flows[i].nextTime = t
            return t
        }
        flows[i].cursor += 1
        if flows[i].cursor < flows[i].script.count { return flows[i].script[flows[i].cursor].time }
        if flows[i].longLived, extendLongLived(&flows[i]) { return flows[i].script[0].time }
        return nil
    }

    // MARK: - legit sessions

    /// Plans a whole session: handshake (with the retransmissions real stacks make), request /
    /// response exchanges, and an ending. `outbound`: the protected host opens it.
    private func planSession(_ f: inout Flow, start: Int64, rng r: inout LabRandom, outbound: Bool) {
        f.reset(kind: .session)
        let v6 = r.chance(0.3)
        f.start = start
        f.clientInside = outbound
        let inside = insideHost(&r, v6: v6, server: !outbound)
        let outside = internetHost(&r, v6: v6)
        if outbound {
            f.client = inside.address; f.clientStack = inside.stack
            f.server = outside; f.serverStack = r.chance(0.85) ? .linux : .freeBSD
            f.serverPort = [443, 443, 443, 80, 22, 993, 853, 5222][Int(r.below(8))]
            f.clientPort = nextPort(host: inside.address, stack: inside.stack, &r)
        } else {
            f.client = outside; f.clientStack = [.linux, .windows, .macOS, .linux][Int(r.below(4))]
            f.server = inside.address; f.serverStack = inside.stack
            f.serverPort = [443, 443, 80, 22, 25][Int(r.below(5))]
            f.clientPort = UInt16(r.int(Int(f.clientStack.ephemeralPorts.lowerBound)...Int(f.clientStack.ephemeralPorts.upperBound)))
        }
        f.vlan = vlan(for: inside.address)
        if !v6, r.chance(0.01) { f.ipv4Options = true }
        if v6, r.chance(0.03) { f.ipv6Extension = true }
        f.setUpEndpoints(&r, outsideHops: UInt8(r.int(4...24)))

        let insideRTT = Int64(r.int(100_000...900_000))
        let outsideRTT = Int64(r.int(4...150)) * ScenarioGenerator.ms + Int64(r.below(1_000_000))
        let rttC = outbound ? insideRTT : outsideRTT
        let rttS = outbound ? outsideRTT : insideRTT
        let mssC: UInt16 = v6 ? 1440 : 1460
        let mssS: UInt16 = v6 ? 1440 : (r.chance(0.2) ? 1400 : 1460)
        f.mssClient = mssC; f.mssServer = mssS
        let segment = Int(min(mssC, mssS)) - (f.timestamps ? 12 : 0)
        let synGaps = f.clientStack.synRetransmissionGaps

        var t = start
        let outcome = r.unit()
        if outcome < 0.02 {
            // S0: nobody answers; the client retries on its RTO back-off and gives up.
            f.add(t, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn)
            for g in synGaps { t += g; f.add(t, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn) }
            f.finishScript(); return
        }
        // TCP Fast Open (RFC 7413): a Linux client holding a cookie sends its request in the
        // SYN, and the SYN-ACK acknowledges the data too (ack = ISN + 1 + data length).
        let fastOpen = outcome > 0.98 && f.clientStack == .linux && f.serverPort == 443
        let synData = fastOpen ? r.int(200...520) : 0
        if fastOpen { f.fastOpenCookie = r.next() }
        var synRetries = 0
        if !fastOpen && r.chance(0.05) { synRetries = r.chance(0.7) ? 1 : 2 }   // SYN lost beyond the router
        var lastSyn = t
        f.add(t, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn, payload: synData)
        for k in 0..<synRetries {
            lastSyn += synGaps[k]
            f.add(lastSyn, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn)
        }
        t = lastSyn + rttS + Int64(r.int(50_000...2_000_000))
        if outcome < 0.05 {
            // REJ: nothing listens; the server's stack answers RST|ACK acknowledging the SYN.
            f.add(t, .server, [.rst, .ack], seq: 0, ack: f.clientISN &+ 1, opts: .none, window: 0)
            f.finishScript(); return
        }
        let synAck = t
        let clientNextAfterSyn = f.clientISN &+ 1 &+ UInt32(synData)
        f.add(t, .server, [.syn, .ack], seq: f.serverISN, ack: clientNextAfterSyn, opts: .synAck)
        var serverFirst = [22, 25].contains(f.serverPort)
        if !fastOpen && r.chance(0.03) {
            // The SYN-ACK is lost between router and client: the client's next RTO resends the
            // SYN, and the server answers it with its SYN-ACK again (same ISN).
            let again = lastSyn + (synRetries < synGaps.count ? synGaps[synRetries] : ScenarioGenerator.second)
            f.add(again, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn)
            t = again + rttS + Int64(r.int(50_000...500_000))
            f.add(t, .server, [.syn, .ack], seq: f.serverISN, ack: f.clientISN &+ 1, opts: .synAck)
        }
        t += rttC
        f.add(t, .client, .ack, seq: clientNextAfterSyn, ack: f.serverISN &+ 1, opts: .ts)
        if !fastOpen && r.chance(0.03) {
            // The ACK is lost beyond the router: the server's SYN-ACK timer fires (1 s on
            // Linux, 3 s on Windows) and the client ACKs again. Only a protocol where the
            // server speaks first leaves the handshake waiting that long.
            serverFirst = true
            let rto: Int64 = f.serverStack == .windows ? 3 * ScenarioGenerator.second : ScenarioGenerator.second
            t = synAck + rto + Int64(r.int(0...3_000_000))
            f.add(t, .server, [.syn, .ack], seq: f.serverISN, ack: f.clientISN &+ 1, opts: .synAck)
            t += rttC
            f.add(t, .client, .ack, seq: f.clientISN &+ 1, ack: f.serverISN &+ 1, opts: .ts)
        }
        var cNext = clientNextAfterSyn
        var sNext = f.serverISN &+ 1

        let exchanges = 1 + min(11, Int(r.exponential(mean: 1.5)))
        for x in 0..<exchanges {
            t += x == 0 ? Int64(r.int(20_000...3_000_000)) : Int64(r.exponential(mean: 150e6)) + 1000
            if x == 0 && serverFirst {
                let banner = r.int(20...60)
                f.add(t, .server, [.psh, .ack], seq: sNext, ack: cNext, opts: .ts, payload: banner)
                sNext &+= UInt32(banner)
                t += rttC
                f.add(t, .client, .ack, seq: cNext, ack: sNext, opts: .ts)
                t += Int64(r.int(100_000...5_000_000))
            }
            if x == 0 && fastOpen {
                // The request rode in the SYN: the response follows the SYN-ACK.
                t = synAck + Int64(r.int(200_000...20_000_000))
            } else {
                let request = r.int(60...900)
                f.add(t, .client, [.psh, .ack], seq: cNext, ack: sNext, opts: .ts, payload: request)
                cNext &+= UInt32(request)
                t += rttS + Int64(r.int(200_000...20_000_000))
            }
            var remaining = max(1, min(30_000, Int(r.exponential(mean: 2500))))
            var k = 0
            var st = t
            while remaining > 0 {
                let len = min(segment, remaining)
                remaining -= len
                f.add(st, .server, remaining == 0 ? [.psh, .ack] : .ack, seq: sNext, ack: cNext, opts: .ts, payload: len)
                sNext &+= UInt32(len)
                k += 1
                if k % 2 == 0 || remaining == 0 {
                    // Delayed ACK: every second full segment, and the last one.
                    f.add(st + rttC, .client, .ack, seq: cNext, ack: sNext, opts: .ts)
                }
                st += Int64(r.int(15_000...200_000))
            }
            t = st + rttC
        }

        t += Int64(r.exponential(mean: 200e6)) + 1000
        let ending = r.unit()
        if ending < 0.5 {
            f.closeFromClient(at: &t, cNext: &cNext, sNext: &sNext, rttS: rttS, rttC: rttC)
        } else if ending < 0.7 {
            f.add(t, .server, [.fin, .ack], seq: sNext, ack: cNext, opts: .ts)
            sNext &+= 1
            t += rttC
            f.add(t, .client, .ack, seq: cNext, ack: sNext, opts: .ts)
            t += Int64(r.int(100_000...50_000_000))
            f.add(t, .client, [.fin, .ack], seq: cNext, ack: sNext, opts: .ts)
            cNext &+= 1
            t += rttS
            f.add(t, .server, .ack, seq: sNext, ack: cNext, opts: .ts)
        } else if ending < 0.85 {
            // An abort (browser tab closed, application timeout): RST|ACK at SND.NXT, the
            // exact RCV.NXT of the peer (RFC 5961 accepts it).
            f.add(t, .client, [.rst, .ack], seq: cNext, ack: sNext, opts: .none, window: 0)
        } else {
            f.add(t, .server, [.rst, .ack], seq: sNext, ack: cNext, opts: .none, window: 0)
        }
        f.finishScript()
    }

    /// A long-lived session (BGP, SSH, a long TLS stream), the target of blind resets. Its
    /// handshake is planned now; the exchanges are planned a chunk at a time by
    /// `extendLongLived`, so a session can last the whole capture with little memory.
    private func planLongLived(_ f: inout Flow, start: Int64, end: Int64, exchangeGap: Double,
                               burstMean: Double, burstChance: Double) {
        f.reset(kind: .session)
        let v6 = rng.chance(0.25)
        let outbound = rng.chance(0.6)
        f.start = start
        f.end = end
        f.longLived = true
        f.exchangeGap = exchangeGap
        f.burstMean = burstMean
        f.burstChance = burstChance
        placeRunningSession(&f, v6: v6, outbound: outbound, serverPorts: outbound ? [179, 22, 443] : [179, 22])
        f.mssClient = v6 ? 1440 : 1460
        f.mssServer = f.mssClient
        f.rttInside = Int64(rng.int(100_000...900_000))
        f.rttOutside = Int64(rng.int(2...40)) * ScenarioGenerator.ms
        var t = start
        let rttC = outbound ? f.rttInside : f.rttOutside
        let rttS = outbound ? f.rttOutside : f.rttInside
        f.add(t, .client, .syn, seq: f.clientISN, ack: 0, opts: .syn)
        t += rttS
        f.add(t, .server, [.syn, .ack], seq: f.serverISN, ack: f.clientISN &+ 1, opts: .synAck)
        t += rttC
        f.add(t, .client, .ack, seq: f.clientISN &+ 1, ack: f.serverISN &+ 1, opts: .ts)
        f.finishScript()
        f.clientNext = f.clientISN &+ 1
        f.serverNext = f.serverISN &+ 1
        f.clock = t
        f.nextExchange = t
    }

    /// The endpoints of a long-running session between a protected host and a Linux peer: the
    /// protected side is the client when `outbound`, and the server listens on one of `serverPorts`.
    private func placeRunningSession(_ f: inout Flow, v6: Bool, outbound: Bool, serverPorts: [UInt16]) {
        f.clientInside = outbound
        let inside = insideHost(&rng, v6: v6, server: !outbound)
        let outside = internetHost(&rng, v6: v6)
        if outbound {
            f.client = inside.address; f.clientStack = inside.stack
            f.server = outside; f.serverStack = .linux
            f.serverPort = serverPorts[Int(rng.below(UInt64(serverPorts.count)))]
            f.clientPort = nextPort(host: inside.address, stack: inside.stack, &rng)
        } else {
            f.client = outside; f.clientStack = .linux
            f.server = inside.address; f.serverStack = inside.stack
            f.serverPort = serverPorts[Int(rng.below(UInt64(serverPorts.count)))]
            f.clientPort = UInt16(rng.int(32768...60999))
        }
        f.vlan = vlan(for: inside.address)
        f.setUpEndpoints(&rng, outsideHops: UInt8(rng.int(4...24)))
    }

    /// A session already open when the capture starts (and when the engine starts): a few
    /// exchanges, then an abort by either side (RST|ACK at the exact RCV.NXT) or a FIN close.
    /// Nothing of its handshake is in the capture, so its RSTs are untracked; each ends at a time
    /// `RSTFloodShape.olderFlowEnds` allows.
    private func planOlderFlow(_ f: inout Flow) {
        f.reset(kind: .session)
        let v6 = rng.chance(0.3)
        let outbound = rng.chance(0.6)
        placeRunningSession(&f, v6: v6, outbound: outbound, serverPorts: outbound ? [443, 443, 22, 993] : [443, 22, 25])
        let rttC = outbound ? Int64(rng.int(100_000...900_000)) : Int64(rng.int(2...80)) * ScenarioGenerator.ms
        let rttS = outbound ? Int64(rng.int(2...80)) * ScenarioGenerator.ms : Int64(rng.int(100_000...900_000))
        let ends = flood?.olderFlowEnds ?? [0...Double(ScenarioGenerator.spawnSeconds)]
        let window = ends[Int(rng.below(UInt64(ends.count)))]
        var t = ScenarioGenerator.epoch + Int64(rng.unit() * (window.upperBound - window.lowerBound) * 1e9
                                                 + window.lowerBound * 1e9)
        var cNext = f.clientISN, sNext = f.serverISN
        if let shape = flood, shape.olderIdleShare > 0, rng.chance(shape.olderIdleShare) {
            // Busy in the capture's first seconds, then quiet until a bare abort or close: the
            // ending is the first packet of the flow in a long time.
            var early = ScenarioGenerator.epoch + Int64(rng.unit() * shape.olderIdleActiveUntil * 1e9)
            if early < t {
                exchange(&f, at: &early, cNext: &cNext, sNext: &sNext, request: 36...400, serverDelay: 100_000...5_000_000,
                         rttS: rttS, rttC: rttC)
                t = max(t, early + 1_000_000)
            }
        } else {
            for _ in 0..<(1 + Int(rng.below(3))) {
                exchange(&f, at: &t, cNext: &cNext, sNext: &sNext, request: 36...400, serverDelay: 100_000...5_000_000,
                         rttS: rttS, rttC: rttC)
                t += Int64(rng.int(1_000_000...50_000_000))
            }
        }
        let ending = rng.unit()
        if ending < 0.45 {
            f.add(t, .server, [.rst, .ack], seq: sNext, ack: cNext, opts: .none, window: 0)
        } else if ending < 0.9 {
            f.add(t, .client, [.rst, .ack], seq: cNext, ack: sNext, opts: .none, window: 0)
        } else {
            f.closeFromClient(at: &t, cNext: &cNext, sNext: &sNext, rttS: rttS, rttC: rttC)
        }
        f.finishScript()
    }

    /// Plans the next chunk of a long-lived session: possibly a burst of forged RSTs, then one
    /// exchange; or the FIN ending once its time is up. False when the session is over.
    private func extendLongLived(_ f: inout Flow) -> Bool {
        guard !f.ended else { return false }
        f.script.removeAll(keepingCapacity: true)
        f.cursor = 0
        let rttC = f.clientInside ? f.rttInside : f.rttOutside
        let rttS = f.clientInside ? f.rttOutside : f.rttInside
        // Exchanges are paced from the session's own schedule, not from the end of the last
        // one, so the session's frame share holds whatever its round-trip time.
        f.nextExchange += Int64(rng.exponential(mean: f.exchangeGap)) + 1000
        var t = max(f.clock + 1000, f.nextExchange)
        var cNext = f.clientNext, sNext = f.serverNext
        if t >= f.end {
            f.closeFromClient(at: &t, cNext: &cNext, sNext: &sNext, rttS: rttS, rttC: rttC)
            f.finishScript()
            f.ended = true
            return true
        }
        if f.burstChance > 0, rng.chance(f.burstChance) {
            // Blind reset (RFC 4953, RFC 5961 §3): the attacker knows the 4-tuple and spoofs
            // the remote peer towards the protected side, guessing SEQ. Guesses are in the
            // receiver's window but never exact (an exact hit would end the session, and the
            // capture would then lie), or well outside it: more than the scaled window beyond
            // RCV.NXT, or before it.
            let toClient = f.clientInside
            let rcvNext = toClient ? sNext : cNext
            let stack = toClient ? f.clientStack : f.serverStack
            let raw = UInt32(stack.establishedWindow)
            let scaled = f.windowScaling ? raw << UInt32(stack.windowScale) : raw
            let count = max(1, Int(rng.exponential(mean: f.burstMean)))
            for _ in 0..<count {
                let seq: UInt32
                if rng.chance(0.3) {
                    // In the window under either reading of it (scaled or raw), never exact.
                    seq = rcvNext &+ UInt32(1 + rng.below(UInt64(raw - 1)))
                } else {
                    let span = UInt64(UInt32.max) - UInt64(scaled) - 2 * 65536
                    seq = rcvNext &+ scaled &+ 65536 &+ UInt32(rng.below(span))
                }
                let withAck = rng.chance(0.3)
                f.add(t, toClient ? .forgedToClient : .forgedToServer, withAck ? [.rst, .ack] : .rst,
                      seq: seq, ack: withAck ? rng.next32() : 0, opts: .none, window: 0)
                t += Int64(rng.int(50_000...2_000_000))
            }
        }
        exchange(&f, at: &t, cNext: &cNext, sNext: &sNext, request: 36...200, serverDelay: 100_000...2_000_000,
                 rttS: rttS, rttC: rttC)
        f.finishScript()
        f.clientNext = cNext
        f.serverNext = sNext
        f.clock = t
        return true
    }

    /// One exchange of a running session: a request of `request` bytes, the response after the
    /// server's delay (ns), the client's ACK. Moves `t` past it.
    private func exchange(_ f: inout Flow, at t: inout Int64, cNext: inout UInt32, sNext: inout UInt32,
                          request: ClosedRange<Int>, serverDelay: ClosedRange<Int>, rttS: Int64, rttC: Int64) {
        let req = rng.int(request)
        f.add(t, .client, [.psh, .ack], seq: cNext, ack: sNext, opts: .ts, payload: req)
        cNext &+= UInt32(req)
        t += rttS + Int64(rng.int(serverDelay))
        let response = rng.int(36...1200)
        f.add(t, .server, [.psh, .ack], seq: sNext, ack: cNext, opts: .ts, payload: response)
        sNext &+= UInt32(response)
        t += rttC
        f.add(t, .client, .ack, seq: cNext, ack: sNext, opts: .ts)
    }

    /// The frame for one step of a session (updates the flow's IP ID and timestamp clocks).
    private func sessionFrame(_ f: inout Flow, _ s: Step) -> FrameSpec {
        let fromClient = s.from == .client || s.from == .forgedToServer
        var spec = FrameSpec(source: fromClient ? f.client : f.server,
                             destination: fromClient ? f.server : f.client,
                             sourcePort: fromClient ? f.clientPort : f.serverPort,
                             destinationPort: fromClient ? f.serverPort : f.clientPort,
                             flags: s.flags, sequence: s.seq, acknowledgment: s.ack)
        spec.vlan = f.vlan
        let stack = fromClient ? f.clientStack : f.serverStack
        let elapsedMs = UInt32(truncatingIfNeeded: (s.time - f.start) / ScenarioGenerator.ms)
        switch s.from {
        case .forgedToClient, .forgedToServer:
            // Forging tools pick their own TTL and IP ID: a fingerprint real attacks leave.
            spec.ttl = UInt8(rng.int(40...250))
            spec.ipID = UInt16(truncatingIfNeeded: rng.next())
            spec.dontFragment = false
            spec.window = s.window ?? 0
            return spec
        case .client:
            spec.ttl = f.clientTTL
            spec.ipID = f.clientID; f.clientID &+= 1
            spec.flowLabel = f.clientFlowLabel
        case .server:
            spec.ttl = f.serverTTL
            spec.ipID = f.serverID; f.serverID &+= 1
            spec.flowLabel = f.serverFlowLabel
        }
        if f.ipv4Options { spec.ipv4Options = [0x94, 0x04, 0x00, 0x00] }   // Router Alert (RFC 2113)
        if f.ipv6Extension { spec.ipv6Extensions = [.destinationOptions(length: 8)] }
        let tsNow = (fromClient ? f.clientTS : f.serverTS) &+ elapsedMs
        let tsEcho = fromClient ? f.lastServerTS : f.lastClientTS
        if fromClient { f.lastClientTS = tsNow } else { f.lastServerTS = tsNow }
        switch s.opts {
        case .none:
            spec.window = s.window ?? stack.establishedWindow
        case .syn:
            spec.window = stack.synWindow
            spec.options = stack.synOptions(mss: f.mssClient, tsValue: tsNow)
            if f.fastOpenCookie != 0 {
                let c = f.fastOpenCookie
                spec.options = spec.options.nop().nop().fastOpen(cookie: (0..<8).map { UInt8(truncatingIfNeeded: c >> (8 * $0)) })
            }
        case .synAck:
            spec.window = stack.synAckWindow
            spec.options = stack.synAckOptions(mss: f.mssServer, sack: f.sack,
                                               timestamps: f.timestamps ? (tsNow, f.lastClientTS) : nil,
                                               windowScale: f.windowScaling)
        case .ts:
            spec.window = stack.establishedWindow
            if f.timestamps { spec.options = TCPOptions().nop().nop().timestamps(tsNow, tsEcho) }
        }
        if s.payload > 0 { spec.payload = .pattern(length: Int(s.payload), offset: Int(s.seq & 0x7fff)) }
        return spec
    }

    // MARK: - reflection

    private func planReflection(_ f: inout Flow, start: Int64) {
        f.reset(kind: .reflection)
        let refl = reflectors.pick(&rng)
        f.start = start
        f.server = refl.address
        f.serverStack = refl.stack
        f.serverPort = refl.servicePort(&rng)
        f.serverTTL = refl.ttl
        f.schedule = refl.schedule
        // The victim: any address of the protected prefixes, live host or not (carpet bombing).
        if FrameSpec.isV4(refl.address) {
            f.client = LabAddresses.protectedHost(rng.below(256), v6: false)
        } else {
            f.client = rng.chance(0.3)
                ? LabAddresses.protectedHost(2 + rng.below(118), v6: true)
                : LabAddresses.protectedHost(rng.next(), v6: true)
        }
        f.vlan = vlan(for: f.client)
        let p = rng.unit()
        f.clientPort = p < 0.7 ? UInt16(rng.int(1024...65535))
            : p < 0.9 ? UInt16(rng.int(32768...60999)) : UInt16(rng.int(1...1023))
        f.serverISN = rng.next32()
        f.clientISN = rng.next32()   // the forged SYN's sequence number
        // What the attacker's SYN offered decides what the reflector's SYN-ACK echoes.
        let style = rng.unit()
        f.sack = style >= 0.55
        f.timestamps = style >= 0.55 && style < 0.9
        f.windowScaling = style >= 0.55
        f.lastClientTS = f.timestamps ? rng.next32() : 0
        f.serverTS = rng.next32()
        f.serverID = refl.stack == .windows ? UInt16(truncatingIfNeeded: rng.next()) : 0
        f.mssServer = FrameSpec.isV4(refl.address) ? 1460 : 1440
        f.reflIndex = 0
        let h = LabAddresses.hostByte(f.client)
        // Live Linux clients without a host firewall answer with a RST, and the reflector then
        // forgets the half-open connection: no retransmissions.
        if h >= 2 && h < 100 && stackOfProtectedHost(h) == .linux && h % 2 == 0
            && (FrameSpec.isV4(f.client) || f.client.bytes[8] == 0 && f.client.bytes[14] == 0) {
            f.backscatter = true
            f.plannedFrames = 2
            f.rttInside = Int64(rng.int(80_000...600_000))
        } else {
            f.plannedFrames = UInt8(ReflectorPool.schedules[Int(f.schedule)].count)
        }
        f.nextTime = start
    }

    private func reflectionTime(_ i: Int) -> Int64 {
        let f = flows[i]
        if f.backscatter { return f.start + f.rttInside }
        let offset = ReflectorPool.schedules[Int(f.schedule)][Int(f.reflIndex)]
        // Timer slack and queueing: a few milliseconds either way of the exact back-off.
        return max(f.start + offset * ScenarioGenerator.second + Int64(rng.below(4_000_000)), f.nextTime + 1)
    }

    private func emitReflection(_ i: Int, _ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows {
        let time = flows[i].nextTime
        var f = flows[i]
        defer { flows[i] = f }
        if f.backscatter && f.reflIndex == 1 {
            // Linux answers an unexpected SYN-ACK with a bare RST at SEG.ACK (RFC 9293 §3.10.7.1).
            var spec = FrameSpec(source: f.client, destination: f.server, sourcePort: f.clientPort,
                                 destinationPort: f.serverPort, flags: .rst, sequence: f.clientISN &+ 1)
            spec.vlan = f.vlan
            spec.window = 0
            spec.ttl = 64
            try write(spec, time: time, label: .attackBackscatter, emit)
            return
        }
        var spec = FrameSpec(source: f.server, destination: f.client, sourcePort: f.serverPort,
                             destinationPort: f.clientPort, flags: [.syn, .ack],
                             sequence: f.serverISN, acknowledgment: f.clientISN &+ 1)
        spec.vlan = f.vlan
        spec.ttl = f.serverTTL
        spec.ipID = f.serverID
        if f.serverStack == .windows { f.serverID &+= 1 }
        spec.window = f.serverStack.synAckWindow
        let ts = f.serverTS &+ UInt32(truncatingIfNeeded: (time - f.start) / ScenarioGenerator.ms)
        spec.options = f.serverStack.synAckOptions(mss: f.mssServer, sack: f.sack,
                                                   timestamps: f.timestamps ? (ts, f.lastClientTS) : nil,
                                                   windowScale: f.windowScaling)
        if !FrameSpec.isV4(spec.source) { spec.flowLabel = UInt32(truncatingIfNeeded: f.serverISN) & 0xfffff }
        try write(spec, time: time, label: .attackSynack, emit)
    }

    // MARK: - RST flood

    private func emitFloodRST(now: Int64, _ emit: (UnsafeRawBufferPointer, Int64, FrameLabel) throws -> Void) rethrows {
        let v6 = rng.chance(flood?.ipv6Share ?? 0.15)
        // Most of the flood hammers a few victims, the rest is spread over the prefixes.
        let victim: IPAddress
        if rng.chance(1 - (flood?.spread ?? 0.4)) {
            victim = LabAddresses.protectedHost([10, 11, 100][Int(rng.below(3))], v6: v6)
        } else {
            victim = LabAddresses.protectedHost(v6 ? rng.next() : rng.below(256), v6: v6)
        }
        let source = v6 ? LabAddresses.ipv6(0x2001_0db8_00ff_0000 | rng.below(0x10000), rng.next())
                        : IPAddress(v4: 198, 19, UInt8(rng.below(256)), UInt8(1 + rng.below(254)))
        let withAck = rng.chance(0.3)
        var spec = FrameSpec(source: source, destination: victim, sourcePort: UInt16(rng.int(1024...65535)),
                             destinationPort: UInt16(rng.int(1...65535)), flags: withAck ? [.rst, .ack] : .rst,
                             sequence: rng.next32(), acknowledgment: withAck ? rng.next32() : 0)
        spec.vlan = vlan(for: victim)
        spec.ttl = UInt8(rng.int(32...255))
        spec.ipID = UInt16(truncatingIfNeeded: rng.next())
        spec.dontFragment = rng.chance(0.5)
        spec.window = rng.chance(0.5) ? 0 : UInt16(truncatingIfNeeded: rng.next())
        try write(spec, time: now, label: .attackRst, emit)
    }

    // MARK: - hosts

    /// Protected hosts: clients at .2-.99 (or the IID ::2-::63 in hex), servers at .100-.119.
    private func insideHost(_ r: inout LabRandom, v6: Bool, server: Bool) -> (address: IPAddress, stack: TCPStack) {
        let n = server ? 100 + r.below(20) : 2 + r.below(98)
        return (LabAddresses.protectedHost(n, v6: v6), server ? (n % 5 == 0 ? .freeBSD : .linux) : stackOfProtectedHost(Int(n)))
    }

    private func stackOfProtectedHost(_ n: Int) -> TCPStack {
        switch n % 10 { case 0..<6: .linux; case 6..<9: .windows; default: .macOS }
    }

    /// Internet hosts of the lab plan (never the reflectors' 198.19.0.0/16 and 2001:db8:ff::/48).
    private func internetHost(_ r: inout LabRandom, v6: Bool) -> IPAddress {
        if v6 { return LabAddresses.ipv6(0x2001_0db8_0001_0000, 0x100 + r.below(0xffff)) }
        let nets: [(UInt8, UInt8, UInt8)] = [(198, 18, 1), (203, 0, 113), (198, 51, 100)]
        let net = nets[Int(r.below(3))]
        return IPAddress(v4: net.0, net.1, net.2, UInt8(10 + r.below(240)))
    }

    /// VLANs by protected host, so every frame to or from a host carries the same tags.
    private func vlan(for a: IPAddress) -> VLANTags {
        switch LabAddresses.hostByte(a) % 8 {
        case 5, 6: .dot1Q(vid: 100)
        case 7: .qinq(outer: 300, inner: 100)
        default: .none
        }
    }

    private func nextPort(host: IPAddress, stack: TCPStack, _ r: inout LabRandom) -> UInt16 {
        // Sequential ephemeral ports from a random start, as Linux's port allocator hands them
        // out: a 4-tuple comes back only after the whole range has been used.
        let h = LabAddresses.hostByte(host) + (FrameSpec.isV4(host) ? 0 : 256)
        let range = stack.ephemeralPorts
        let size = UInt16(range.upperBound - range.lowerBound) + 1
        if portCursor[h] == 0 { portCursor[h] = 1 + UInt16(r.below(UInt64(size - 1))) }
        portCursor[h] = portCursor[h] % size + 1
        return range.lowerBound + (portCursor[h] - 1)
    }
}

/// The RST flood of a `rst-flood` or `mixed` scenario, as a test sets it: `rate` spoofed RSTs a
/// second for `seconds` from `start` (seconds after the capture starts); `spread` of them to
/// random addresses of the protected /24 and /64, the rest to three hosts; `ipv6Share` to the /64.
/// `olderFlows` legitimate sessions already open at the capture's start end (mostly with a RST)
/// inside one of `olderFlowEnds` (seconds from the start); `olderIdleShare` of them send only in
/// the capture's first `olderIdleActiveUntil` seconds before that ending.
public struct RSTFloodShape: Sendable {
    public var rate: Double
    public var seconds: Double
    public var start: Double
    public var spread: Double
    public var ipv6Share: Double
    public var olderFlows: Int
    public var olderFlowEnds: [ClosedRange<Double>]
    public var olderIdleShare: Double
    public var olderIdleActiveUntil: Double

    public init(rate: Double, seconds: Double = 12, start: Double = 18, spread: Double = 1, ipv6Share: Double = 0.5,
                olderFlows: Int = 0, olderFlowEnds: [ClosedRange<Double>] = [0...60], olderIdleShare: Double = 0,
                olderIdleActiveUntil: Double = 5) {
        self.rate = rate; self.seconds = seconds; self.start = start; self.spread = spread
        self.ipv6Share = ipv6Share; self.olderFlows = olderFlows; self.olderFlowEnds = olderFlowEnds
        self.olderIdleShare = olderIdleShare; self.olderIdleActiveUntil = olderIdleActiveUntil
    }
}

// MARK: - flow state

enum SpawnKind { case legit, carpet, flood }

struct Spawner {
    var kind: SpawnKind
    var meanGap: Double
    var budget: Int
    var committed = 0
    /// Nanoseconds after the epoch when spawning stops even if the budget is not reached.
    var stop: Int64
}

enum FlowKind: UInt8 { case session, reflection }

enum Sender: UInt8 { case client, server, forgedToClient, forgedToServer }

enum OptionKind: UInt8 { case none, syn, synAck, ts }

struct Step {
    var time: Int64
    var seq: UInt32
    var ack: UInt32
    var order: UInt16
    var payload: UInt16
    var window: UInt16?
    var flags: TCPFlags
    var from: Sender
    var opts: OptionKind
    var forged: Bool { from == .forgedToClient || from == .forgedToServer }
}

struct Flow {
    var kind: FlowKind = .session
    var client = IPAddress.zero, server = IPAddress.zero
    var clientPort: UInt16 = 0, serverPort: UInt16 = 0
    var clientStack: TCPStack = .linux, serverStack: TCPStack = .linux
    var clientInside = true
    var vlan: VLANTags = .none
    var ipv4Options = false, ipv6Extension = false
    var clientISN: UInt32 = 0, serverISN: UInt32 = 0
    var clientTTL: UInt8 = 64, serverTTL: UInt8 = 64
    var clientID: UInt16 = 0, serverID: UInt16 = 0
    var clientFlowLabel: UInt32 = 0, serverFlowLabel: UInt32 = 0
    var clientTS: UInt32 = 0, serverTS: UInt32 = 0
    var lastClientTS: UInt32 = 0, lastServerTS: UInt32 = 0
    var sack = false, timestamps = false, windowScaling = false
    /// Non-zero: the client's SYN carries this TCP Fast Open cookie and data.
    var fastOpenCookie: UInt64 = 0
    var mssClient: UInt16 = 1460, mssServer: UInt16 = 1460
    var start: Int64 = 0
    var script: [Step] = []
    var cursor = 0
    // long-lived sessions
    var longLived = false, ended = false
    var end: Int64 = 0, clock: Int64 = 0
    var clientNext: UInt32 = 0, serverNext: UInt32 = 0
    var exchangeGap = 0.0, burstMean = 0.0, burstChance = 0.0
    var nextExchange: Int64 = 0
    var rttInside: Int64 = 0, rttOutside: Int64 = 0
    // reflections
    var schedule: UInt8 = 0, reflIndex: UInt8 = 0, plannedFrames: UInt8 = 0
    var backscatter = false
    var nextTime: Int64 = 0

    mutating func reset(kind k: FlowKind) {
        script.removeAll(keepingCapacity: true)
        let s = script
        self = Flow()
        script = s
        kind = k
    }

    /// ISNs, TTLs seen at the router, IP IDs, flow labels, timestamp clocks and the options the
    /// two stacks agree on.
    mutating func setUpEndpoints(_ r: inout LabRandom, outsideHops: UInt8) {
        clientISN = r.next32(); serverISN = r.next32()
        clientTTL = clientStack.initialTTL - (clientInside ? 0 : outsideHops)
        serverTTL = serverStack.initialTTL - (clientInside ? outsideHops : 0)
        clientID = UInt16(truncatingIfNeeded: r.next()); serverID = UInt16(truncatingIfNeeded: r.next())
        if !FrameSpec.isV4(client) {
            clientFlowLabel = clientStack == .windows ? 0 : r.next32() & 0xfffff
            serverFlowLabel = serverStack == .windows ? 0 : r.next32() & 0xfffff
        }
        clientTS = r.next32(); serverTS = r.next32()
        timestamps = clientStack.offersTimestamps && serverStack.offersTimestamps
        sack = true
        windowScaling = true
    }
}

extension Flow {
    /// The client's orderly close: its FIN, the server's FIN half a round trip later, the last
    /// ACK; moves `t` to that ACK and both sequence numbers past their FINs.
    mutating func closeFromClient(at t: inout Int64, cNext: inout UInt32, sNext: inout UInt32,
                                  rttS: Int64, rttC: Int64) {
        add(t, .client, [.fin, .ack], seq: cNext, ack: sNext, opts: .ts)
        cNext &+= 1
        t += rttS
        add(t, .server, [.fin, .ack], seq: sNext, ack: cNext, opts: .ts)
        sNext &+= 1
        t += rttC
        add(t, .client, .ack, seq: cNext, ack: sNext, opts: .ts)
    }

    /// Appends a step; `finishScript` sorts the steps by time (responses planned ahead of later
    /// requests interleave with them).
    mutating func add(_ time: Int64, _ from: Sender, _ flags: TCPFlags, seq: UInt32, ack: UInt32, opts: OptionKind,
                      payload: Int = 0, window: UInt16? = nil) {
        let order = UInt16(truncatingIfNeeded: script.count)
        script.append(Step(time: time, seq: seq, ack: ack, order: order, payload: UInt16(payload),
                           window: window, flags: flags, from: from, opts: opts))
    }

    mutating func finishScript() {
        script.sort { $0.time != $1.time ? $0.time < $1.time : $0.order < $1.order }
    }
}

extension TCPStack {
    /// Gaps between a client's SYN retransmissions (initial RTO 1 s doubling on Linux, RFC 6298;
    /// 3 s on Windows with two retries; macOS retries at 1 s a few times first).
    var synRetransmissionGaps: [Int64] {
        switch self {
        case .linux, .freeBSD: return TCPStack.linuxGaps
        case .windows: return TCPStack.windowsGaps
        case .macOS: return TCPStack.macGaps
        }
    }
    private static let linuxGaps: [Int64] = [1, 2, 4, 8, 16, 32].map { $0 * ScenarioGenerator.second }
    private static let windowsGaps: [Int64] = [3, 6].map { $0 * ScenarioGenerator.second }
    private static let macGaps: [Int64] = [1, 1, 1, 1, 1, 2, 4, 8, 16, 32].map { $0 * ScenarioGenerator.second }
}

/// Reflectors: real servers whose addresses the attacker does not forge, in 198.19.0.0/16 and
/// 2001:db8:ff::/48. Each has a fixed stack, TTL and SYN-ACK retransmission schedule.
struct ReflectorPool {
    let count: Int
    let seed: UInt64

    /// Seconds after the first SYN-ACK of each retransmission. Linux `tcp_synack_retries` = 5
    /// (the default): 0, 1, 3, 7, 15, 31; tuned Linux with 2 or 3 retries; Linux under SYN
    /// cookies: no retransmission; Windows: two at 3 s doubling; FreeBSD's syncache: three.
    static let schedules: [[Int64]] = [
        [0, 1, 3, 7, 15, 31], [0, 1, 3], [0, 1, 3, 7], [0], [0, 3, 9], [0, 1, 3, 7],
    ]
    static let scheduleWeights: [UInt64] = [60, 8, 7, 10, 10, 5]

    init(count: Int, seed: UInt64) {
        self.count = count
        self.seed = seed
    }

    struct Reflector {
        var address: IPAddress
        var stack: TCPStack
        var schedule: UInt8
        var ttl: UInt8
        var hash: UInt64
        func servicePort(_ r: inout LabRandom) -> UInt16 {
            let ports: [UInt16] = [80, 443, 22, 21, 25, 53, 3389, 8080, 179, 23]
            // Most reflectors serve the web; the attacker aims at whatever port is open.
            let first = ports[Int(hash % 10)]
            return r.chance(0.6) ? first : (r.chance(0.5) ? 80 : 443)
        }
    }

    func pick(_ r: inout LabRandom) -> Reflector {
        let i = UInt64(r.below(UInt64(count)))
        var h = LabRandom(seed: seed ^ (i &* SplitMix64.golden))
        let hash = h.next()
        let v6 = hash % 5 == 0
        let address: IPAddress
        if v6 {
            address = LabAddresses.ipv6(0x2001_0db8_00ff_0000 | (h.next() & 0xffff), h.next())
        } else {
            // Spread over the /16 by an odd multiplier (a permutation of 0..<65536).
            let x = UInt16(truncatingIfNeeded: (i &+ 1) &* 40503)
            let fixed = x == 0 || x == 0xffff ? 0x0101 : x
            address = IPAddress(v4: 198, 19, UInt8(fixed >> 8), UInt8(fixed & 0xff))
        }
        var roll = h.below(100)
        var schedule = 0
        for (k, w) in ReflectorPool.scheduleWeights.enumerated() {
            if roll < w { schedule = k; break }
            roll -= w
        }
        let stack: TCPStack = schedule == 4 ? .windows : schedule == 5 ? .freeBSD : .linux
        let ttl = stack.initialTTL - UInt8(6 + h.below(20))
        return Reflector(address: address, stack: stack, schedule: UInt8(schedule), ttl: ttl, hash: hash)
    }
}

/// A binary min-heap of (time, insertion order, flow slot): insertion order breaks ties, so the
/// output is deterministic.
struct EventHeap {
    private var items: [(time: Int64, order: UInt64, slot: Int32)] = []
    private var counter: UInt64 = 0

    var count: Int { items.count }

    @inline(__always)
    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].time != items[b].time ? items[a].time < items[b].time : items[a].order < items[b].order
    }

    mutating func push(time: Int64, slot: Int32) {
        counter += 1
        items.append((time, counter, slot))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (Int64, Int32)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            // Sift down with a hole instead of swaps, on the raw buffer (this is the
            // generator's hottest loop at millions of live flows).
            items.withUnsafeMutableBufferPointer { h in
                let n = h.count
                var i = 0
                while true {
                    let l = 2 * i + 1
                    if l >= n { break }
                    var m = l
                    let r = l + 1
                    if r < n && (h[r].time < h[l].time || h[r].time == h[l].time && h[r].order < h[l].order) { m = r }
                    if h[m].time < last.time || h[m].time == last.time && h[m].order < last.order {
                        h[i] = h[m]
                        i = m
                    } else { break }
                }
                h[i] = last
            }
        }
        return (top.time, top.slot)
    }
}
