#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

public enum QueueVerdict: Sendable {
    case accept
    case drop

    var netfilterValue: Int32 { self == .accept ? NF_ACCEPT : NF_DROP }
}

/// Verdicts in FIFO order, batched. NFQNL_MSG_VERDICT_BATCH applies one verdict to every queued
/// id up to the one it names, so a run of equal verdicts costs one message; the messages of a
/// whole receive batch go to the kernel in one send, which processes them in order (nfnetlink
/// walks every message of the buffer). A drop ends the accept run before it (the accepts are
/// emitted first), so order holds exactly as if each verdict were sent alone.
///
/// When to flush is the caller's rule (Suricata's discipline, adapted): before the receive loop
/// could block (socket drained), when the oldest pending verdict reaches the flush interval, and
/// at shutdown. A verdict therefore never waits for a later packet to arrive.
public final class VerdictBatcher {
    public let socket: QueueSocket
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    /// The open run: its verdict, its last id, how many packets it covers.
    private var runVerdict: QueueVerdict = .accept
    private var runLastID: UInt32 = 0
    private var runLength = 0
    /// Packets whose verdict is recorded but not yet sent.
    public private(set) var pending = 0
    /// When the oldest pending verdict was recorded (monotonic ns), for the flush timer.
    public private(set) var oldestPending: Int64 = 0

    /// Messages sent, packets covered, and send failures (packets then stay queued in the kernel
    /// until a later batch covers them or the socket closes).
    public private(set) var messagesSent = 0
    public private(set) var sendCalls = 0
    public private(set) var sendErrors = 0

    /// One verdict message: nlmsghdr 16 + nfgenmsg 4 + NFQA_VERDICT_HDR attribute 12 = 32 bytes.
    static let messageSize = 32

    public init(_ socket: QueueSocket, capacity: Int) {
        self.socket = socket
        // Worst case every packet of a receive batch alternates verdicts: one message each.
        buffer = .allocate(byteCount: max(capacity, 16) * Self.messageSize * 2, alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// Records the verdict for the next packet in arrival order.
    @inline(__always)
    public func record(_ id: UInt32, _ verdict: QueueVerdict, now: Int64) {
        if runLength > 0, verdict != runVerdict { closeRun() }
        if pending == 0 { oldestPending = now }
        runVerdict = verdict
        runLastID = id
        runLength += 1
        pending += 1
    }

    private func closeRun() {
        guard runLength > 0 else { return }
        if used + Self.messageSize * 2 > buffer.count { sendBuffer() }
        let base = (buffer.baseAddress! + used).assumingMemoryBound(to: CChar.self)
        let nlh = nfq_nlmsg_put(base, Int32(NFQNL_MSG_VERDICT_BATCH.rawValue), UInt32(socket.queue))!
        nfq_nlmsg_verdict_put(nlh, Int32(bitPattern: runLastID), runVerdict.netfilterValue)
        used += Int(mnl_align(nlh.pointee.nlmsg_len))
        runLength = 0
    }

    private func sendBuffer() {
        guard used > 0 else { return }
        do {
            try socket.send(UnsafeRawBufferPointer(start: buffer.baseAddress, count: used))
            sendCalls += 1
        } catch {
            sendErrors += 1
        }
        used = 0
    }

    /// Sends everything recorded so far, in order, in one system call.
    public func flush() {
        guard pending > 0 else { return }
        closeRun()
        sendBuffer()
        messagesSent += pending
        pending = 0
    }
}

@inline(__always)
func mnl_align(_ len: UInt32) -> UInt32 { (len + 3) & ~3 }
