#if canImport(Glibc)
import Glibc
#endif
import Lab
import NFQueue
import NFQueueTestSupport
import PacketParser
import Testing
import VerdictEngine
@testable import Agent

/// One worker's packet path on a scripted queue, without root: packets built at the kernel's
/// message layout go in, the verdicts it sends are applied to a model of the kernel's queue. Every
/// packet gets exactly one verdict, none waits for a later packet once the socket has no more, and
/// at shutdown what is in the socket is judged and sent before the queue is unbound and closed.
@Suite struct WorkerTests {
    static let victim = IPAddress("198.18.2.2")!
    static let remote = IPAddress("203.0.113.5")!

    /// A SYN the protected side sends, or a SYN-ACK arriving for it: answering that SYN (the
    /// engine accepts it) or nobody's (reflection: dropped).
    enum Kind { case syn, answer, reflected }

    static func packet(_ id: UInt32, _ kind: Kind) -> PacketMessage {
        let port = UInt16(40_000 + id % 1000)
        let spec: FrameSpec
        switch kind {
        case .syn:
            spec = FrameSpec(source: victim, destination: remote, sourcePort: port, destinationPort: 443,
                             flags: .syn, sequence: 1000 * id)
        case .answer:
            spec = FrameSpec(source: remote, destination: victim, sourcePort: 443, destinationPort: port,
                             flags: [.syn, .ack], sequence: 7, acknowledgment: 1000 * id + 1)
        case .reflected:
            spec = FrameSpec(source: remote, destination: victim, sourcePort: 443, destinationPort: 50_000 + UInt16(id % 1000),
                             flags: [.syn, .ack], sequence: 7, acknowledgment: 12345)
        }
        return PacketMessage(id: id, payload: FrameBuilder.frame(spec, link: .raw))
    }

    /// The worker, its shared state and a transport with `script`; `receiveBatch` slots per receive.
    static func setUp(_ script: [[PacketMessage]], receiveBatch: Int = 8) -> (Worker, AgentShared, ScriptedTransport) {
        var policy = Policy()
        policy.protected.insert(CIDR("198.18.2.0/24")!)
        let logger = Logger(level: .error)
        let enforcement = KernelEnforcement(logger: logger, timeout: 60, queueCount: 1, dryRun: false, arm: { _, _, _ in })
        let shared = AgentShared(settings: AgentSettings(), policy: policy, logger: logger, enforcement: enforcement)
        var c = QueueConfiguration(queue: 0)
        c.receiveBatch = receiveBatch
        let transport = ScriptedTransport(c, script: script)
        transport.whenScriptEnds = { shared.stop() }
        return (Worker(queue: 0, shared: shared, seed: 1), shared, transport)
    }

    /// SYNs, their answers and reflected SYN-ACKs in several batches, some full, some not, with
    /// drained sockets between: each packet's verdict is the engine's, given once.
    @Test func everyPacketGetsExactlyItsVerdictAndNothingWaitsOnceTheSocketHasNoMore() {
        var id: UInt32 = 0
        func next(_ k: Kind) -> PacketMessage { id += 1; return Self.packet(id, k) }
        var script: [[PacketMessage]] = []
        var reflected: Set<UInt32> = []
        for round in 0..<6 {
            var batch: [PacketMessage] = []
            for i in 0..<(round % 2 == 0 ? 8 : 5) {      // full batches and short ones
                let p = next(i % 3 == 2 ? .reflected : .syn)
                if i % 3 == 2 { reflected.insert(p.id) }
                batch.append(p)
            }
            script.append(batch)
            if round % 3 == 2 { script.append([]) }      // the socket drains now and then
        }
        // The answers to every SYN, after them.
        let syns = script.joined().filter { !reflected.contains($0.id) }.map(\.id)
        script.append(syns.map { var p = Self.packet($0, .answer); p.id = $0 + 10_000; return p })
        let (worker, _, t) = Self.setUp(script)
        worker.run(t)

        #expect(t.kernel.waiting.isEmpty, "packets left without a verdict: \(t.kernel.waiting)")
        #expect(t.kernel.unknown.isEmpty, "verdicts naming ids no longer queued: \(t.kernel.unknown)")
        for p in script.joined() {
            let want = !reflected.contains(p.id)
            #expect(t.kernel.verdict(p.id) == want, "packet \(p.id): \(t.kernel.given[p.id] ?? [])")
        }
        #expect(t.waitingAfterDrain.count >= 4)
        #expect(t.waitingAfterDrain.allSatisfy { $0.isEmpty }, "verdicts unsent after the socket had no more: \(t.waitingAfterDrain)")
        #expect(worker.counters.value(WorkerCounter.dropped.rawValue) == UInt64(reflected.count))
        #expect(t.events.suffix(2) == [.unbind, .close])
    }

    /// Stop while packets are still in the socket: they are received and judged, their verdicts
    /// sent, and only then is the queue unbound (the kernel drops what an unbound queue holds),
    /// then closed.
    @Test func atShutdownTheSocketIsDrainedAndJudgedBeforeTheUnbind() {
        let script: [[PacketMessage]] = (0..<5).map { b in
            (1...4).map { i in Self.packet(UInt32(b * 4 + i), i == 4 ? .reflected : .syn) }
        }
        let (worker, shared, t) = Self.setUp(script, receiveBatch: 4)
        t.afterReceive = { n in if n == 2 { shared.stop() } }   // three batches still in the socket
        worker.run(t)
        let unbind = t.events.firstIndex(of: .unbind)
        #expect(unbind != nil && t.events.last == .close && t.events.filter { $0 == .close }.count == 1)
        let received = t.events.flatMap { if case .received(let ids) = $0 { ids } else { [UInt32]() } }
        #expect(received == Array(1...20), "every batch in the socket was taken")
        let lastSend = t.events.lastIndex { if case .sent = $0 { true } else { false } }
        #expect(lastSend != nil && lastSend! < unbind!, "a verdict after the unbind is lost")
        #expect(t.kernel.waiting.isEmpty && t.kernel.unknown.isEmpty)
        for id in UInt32(1)...20 { #expect(t.kernel.verdict(id) == (id % 4 != 0), "packet \(id)") }
    }

    /// A receive that fails: what was received keeps its verdicts, and the worker serves on.
    @Test func aReceiveErrorFlushesAndServesOn() {
        let script: [[PacketMessage]] = [[Self.packet(1, .syn), Self.packet(2, .reflected)], [Self.packet(3, .syn)]]
        let (worker, _, t) = Self.setUp(script)
        t.afterReceive = { n in if n == 1 { t.failingReceives = [ENOMEM] } }
        worker.run(t)
        #expect(t.kernel.verdict(1) == true && t.kernel.verdict(2) == false && t.kernel.verdict(3) == true)
        #expect(t.kernel.waiting.isEmpty)
    }

    /// Sends that fail twice lose their verdicts: counted where the metrics read them, and the
    /// kernel still holds those packets until a later accept batch covers them.
    @Test func lostVerdictsAreCounted() {
        let script: [[PacketMessage]] = [[Self.packet(1, .syn), Self.packet(2, .syn)], [], [Self.packet(3, .syn)]]
        let (worker, _, t) = Self.setUp(script)
        t.afterReceive = { n in if n == 1 { t.failingSends = [EPERM, EPERM] } }
        worker.run(t)
        #expect(worker.counters.value(WorkerCounter.lostVerdicts.rawValue) == 2)
        #expect(worker.counters.value(WorkerCounter.verdictSendErrors.rawValue) == 2)
        #expect(t.kernel.waiting.isEmpty, "the accept batch for 3 covered 1 and 2 (fail open)")
        #expect([1, 2, 3].allSatisfy { t.kernel.verdict($0) == true })
    }
}
