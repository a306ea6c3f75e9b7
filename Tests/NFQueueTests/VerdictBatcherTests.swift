#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue
import NFQueueTestSupport
import Testing
import TestSupport
@testable import NFQueue

/// The verdict batcher against a model of the kernel's verdict handling, without root: every
/// packet must get exactly the verdict recorded for it, once, whatever the mix of accepts and
/// drops, the flush points, held packets and failed sends. One wrong batch drops somebody else's
/// packets, so the messages themselves are checked too.
@Suite struct VerdictBatcherTests {
    /// A queue whose ids `ids` are waiting in the kernel model, and a batcher on it.
    private func setUp(_ ids: some Sequence<UInt32>, capacity: Int = 64) -> (ScriptedTransport, VerdictBatcher) {
        let t = ScriptedTransport(QueueConfiguration(queue: 7), script: [])
        for id in ids { t.kernel.enqueue(id) }
        return (t, VerdictBatcher(t, capacity: capacity))
    }

    private func accept(_ id: UInt32) -> VerdictMessage { VerdictMessage(batch: false, queue: 7, verdict: UInt32(NF_ACCEPT), id: id) }
    private func drop(_ id: UInt32) -> VerdictMessage { VerdictMessage(batch: false, queue: 7, verdict: UInt32(NF_DROP), id: id) }
    private func acceptUpTo(_ id: UInt32) -> VerdictMessage { VerdictMessage(batch: true, queue: 7, verdict: UInt32(NF_ACCEPT), id: id) }

    @Test func aRunOfAcceptsIsOneBatchNamingItsLastID() {
        let (t, b) = setUp(1...10)
        for id in UInt32(1)...10 { b.record(id, .accept, now: 0) }
        #expect(b.pending == 10)
        #expect(t.verdicts.isEmpty, "nothing leaves before the flush")
        b.flush()
        #expect(t.verdicts == [acceptUpTo(10)])
        #expect(t.kernel.waiting.isEmpty)
        #expect((1...10).allSatisfy { t.kernel.verdict($0) == true })
        #expect(b.pending == 0 && b.messagesSent == 10 && b.sendCalls == 1)
    }

    @Test func aDropIsSentAloneAndClosesTheAcceptsBeforeIt() {
        let (t, b) = setUp(1...6)
        for (id, v) in [(1, QueueVerdict.accept), (2, .accept), (3, .drop), (4, .drop), (5, .accept), (6, .accept)] {
            b.record(UInt32(id), v, now: 0)
        }
        b.flush()
        #expect(t.verdicts == [acceptUpTo(2), drop(3), drop(4), acceptUpTo(6)])
        #expect(t.kernel.verdict(3) == false && t.kernel.verdict(4) == false)
        #expect([1, 2, 5, 6].allSatisfy { t.kernel.verdict($0) == true })
        #expect(b.sendCalls == 1, "one receive batch's verdicts leave in one send")
    }

    /// A packet the batcher never heard of (its message did not decode, or its verdict was lost)
    /// may still wait below later ids: a batch accept covers it (fail open), a drop never does.
    @Test func aDropNeverReachesAnOlderPacketStillWaiting() {
        let (t, b) = setUp(1...4)
        // id 1 is waiting but recorded nowhere; 2 accept, 3 drop, 4 drop.
        b.record(2, .accept, now: 0)
        b.record(3, .drop, now: 0)
        b.record(4, .drop, now: 0)
        b.flush()
        #expect(t.kernel.verdict(1) == true, "swept up by the accept batch, never by a drop")
        #expect(t.kernel.verdict(3) == false && t.kernel.verdict(4) == false)
    }

    /// While a packet is held (its verdict waits for conntrack), no batch may name an id at or
    /// past it: the batch would give the held packet a verdict too.
    @Test func batchesStayBelowTheOldestHeldID() {
        let (t, b) = setUp(1...8)
        b.record(1, .accept, now: 0)
        b.record(2, .accept, now: 0)
        b.holdFloor = 3                       // 3 is held
        b.record(4, .accept, now: 0)
        b.record(5, .accept, now: 0)
        b.flush()
        #expect(t.kernel.waiting == [3, 6, 7, 8], "the held packet still waits (6 to 8 have no verdict yet)")
        #expect(t.verdicts.allSatisfy { !$0.batch || $0.id < 3 })
        b.record(6, .accept, now: 0)
        b.recordHeld(3, .drop, now: 0)        // its state never came
        b.holdFloor = nil
        b.record(7, .accept, now: 0)
        b.record(8, .accept, now: 0)
        b.flush()
        #expect(t.kernel.waiting.isEmpty && t.kernel.unknown.isEmpty)
        #expect(t.kernel.verdict(3) == false)
        #expect([1, 2, 4, 5, 6, 7, 8].allSatisfy { t.kernel.verdict($0) == true })
        #expect(t.verdicts.last == acceptUpTo(8))
    }

    /// Ids wrap: a floor just past the wrap still stops a batch that began before it.
    @Test func theHoldFloorComparesAcrossTheWrap() {
        let ids: [UInt32] = [UInt32.max - 1, UInt32.max, 0, 1, 2]
        let (t, b) = setUp(ids)
        b.record(UInt32.max - 1, .accept, now: 0)
        b.holdFloor = UInt32.max             // held
        b.record(0, .accept, now: 0)
        b.record(1, .accept, now: 0)
        b.flush()
        #expect(t.kernel.waiting == [UInt32.max, 2])
        b.recordHeld(UInt32.max, .accept, now: 0)
        b.holdFloor = nil
        b.record(2, .drop, now: 0)
        b.flush()
        #expect(t.kernel.waiting.isEmpty && t.kernel.unknown.isEmpty)
        #expect(t.kernel.verdict(2) == false && t.kernel.verdict(UInt32.max) == true)
    }

    @Test func aFailedSendIsRetriedOnce() {
        let (t, b) = setUp(1...3)
        t.failingSends = [ENOBUFS]
        b.record(1, .accept, now: 0)
        b.record(2, .drop, now: 0)
        b.record(3, .accept, now: 0)
        b.flush()
        #expect(b.sendErrors == 1 && b.lostVerdicts == 0 && b.takeSendError() == nil)
        #expect(t.verdicts == [acceptUpTo(1), drop(2), acceptUpTo(3)], "sent once, in order")
        #expect(t.kernel.waiting.isEmpty)
    }

    /// Both tries fail: the buffer's verdicts are counted lost, the error kept for the log, and
    /// the packets stay waiting in the kernel until a later accept batch covers them (fail open).
    @Test func verdictsLostToTwoFailedSendsAreCountedAndLaterAcceptsCoverThem() {
        let (t, b) = setUp(1...5)
        t.failingSends = [EPERM, EPERM]
        b.record(1, .accept, now: 0)
        b.record(2, .accept, now: 0)
        b.record(3, .drop, now: 0)
        b.flush()
        #expect(b.sendErrors == 2 && b.lostVerdicts == 3)
        let e = b.takeSendError()
        #expect(e?.errno == EPERM)
        #expect(b.takeSendError() == nil, "taken once")
        #expect(t.kernel.waiting == [1, 2, 3, 4, 5])
        b.record(4, .accept, now: 0)
        b.record(5, .accept, now: 0)
        b.flush()
        #expect(t.kernel.waiting.isEmpty)
        #expect((1...5).allSatisfy { t.kernel.verdict($0) == true }, "the lost drop fails open, never drops another")
    }

    /// More messages than the buffer holds: it is sent when full, and order still holds.
    @Test func aFullBufferIsSentBeforeItOverflows() {
        let (t, b) = setUp(1...400, capacity: 16)
        for id in UInt32(1)...400 { b.record(id, id % 2 == 0 ? .drop : .accept, now: 0) }
        #expect(b.sendCalls > 0, "sent before the flush: the buffer holds 32 messages")
        b.flush()
        #expect(t.kernel.waiting.isEmpty && t.kernel.unknown.isEmpty)
        #expect((1...400).allSatisfy { t.kernel.verdict($0) == ($0 % 2 == 1) })
    }

    @Test func pendingAndTheFlushTimerFollowTheOldestRecord() {
        let (_, b) = setUp(1...3)
        #expect(b.pending == 0)
        b.record(1, .accept, now: 1_000)
        b.record(2, .accept, now: 5_000)
        #expect(b.pending == 2 && b.oldestPending == 1_000)
        b.flush()
        b.record(3, .drop, now: 9_000)
        #expect(b.pending == 1 && b.oldestPending == 9_000)
    }

    /// Generated mixes of accepts, drops, holds, unrecorded packets, flush points and failed
    /// sends (seeded), against the kernel model: every recorded verdict arrives exactly, an
    /// unrecorded packet is only ever accepted, a held packet gets nothing until its own verdict.
    @Test(arguments: 1...40) func generatedSequencesKeepEveryVerdict(seed: UInt64) {
        var g = SplitMix(state: seed &* 0x9e37_79b9)
        let start = UInt32.max - UInt32(g.below(300))       // some runs wrap
        let count = 50 + g.below(400)
        let ids = (0..<count).map { start &+ UInt32($0) }
        let (t, b) = setUp(ids, capacity: 1 + g.below(64))
        var want: [UInt32: Bool] = [:]
        var held: [UInt32] = []
        var unrecorded: Set<UInt32> = []
        for id in ids {
            switch g.below(20) {
            case 0: unrecorded.insert(id)                               // never recorded
            case 1, 2:                                                  // held for conntrack
                held.append(id)
                b.holdFloor = held.first
                continue
            default:
                let v: QueueVerdict = g.below(4) == 0 ? .drop : .accept
                want[id] = v == .accept
                b.record(id, v, now: 0)
            }
            if !held.isEmpty, g.below(6) == 0 {                         // a held packet settles
                let h = held.remove(at: g.below(held.count))
                let v: QueueVerdict = g.below(2) == 0 ? .drop : .accept
                want[h] = v == .accept
                b.recordHeld(h, v, now: 0)
                b.holdFloor = held.first
            }
            if g.below(8) == 0 { b.flush() }
            if g.below(30) == 0 { t.failingSends = [ENOBUFS] }          // retried, nothing lost
        }
        for h in held {
            #expect(t.kernel.verdict(h) == nil, "held \(h) got a verdict before its own")
            want[h] = true
            b.recordHeld(h, .accept, now: 0)
        }
        b.holdFloor = nil
        b.flush()
        #expect(b.lostVerdicts == 0)
        #expect(t.kernel.unknown.isEmpty, "a single verdict named an id no longer waiting")
        for (id, accept) in want {
            #expect(t.kernel.verdict(id) == accept, "id \(id): want \(accept ? "accept" : "drop"), got \(t.kernel.given[id] ?? [])")
        }
        for id in unrecorded where t.kernel.given[id] != nil {
            #expect(t.kernel.verdict(id) == true, "unrecorded \(id) was dropped for somebody else")
        }
    }
}
