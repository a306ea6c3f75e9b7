#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

public enum QueueVerdict: Sendable {
    case accept
    case drop

    var netfilterValue: Int32 { self == .accept ? NF_ACCEPT : NF_DROP }
}

/// Verdicts in FIFO order, batched. Accepts go as NFQNL_MSG_VERDICT_BATCH, which applies one
/// verdict to every still-queued id up to the one it names, so a run of accepts costs one
/// message. Drops go as single-id NFQNL_MSG_VERDICT messages: a drop batch would also drop every
/// older packet still queued, e.g. one whose accept message was lost to a failed send or one
/// whose message could not be decoded, and those must fail open, never be dropped for somebody
/// else. The messages of a whole receive batch go to the kernel in one send, which processes
/// them in order (nfnetlink walks every message of the buffer); a drop closes the accept run
/// before it (the accepts are emitted first), so order holds exactly as if each verdict were
/// sent alone, and every recorded packet is named by exactly one message.
///
/// Held packets (a verdict that waits, e.g. for conntrack state): the caller names the oldest
/// held id in `holdFloor`. A batch covers every id at or below the one it names, the held one
/// too, so while a packet is held accepts are batched only below the oldest held id, and an
/// accept at or above it goes as its own message. A held packet's verdict, when it comes, is
/// always its own message (`recordHeld`).
///
/// When to flush is the caller's rule (Suricata's discipline, adapted): before the receive loop
/// could block (socket drained), when the oldest pending verdict reaches the flush interval, and
/// at shutdown. A verdict therefore never waits for a later packet to arrive.
public final class VerdictBatcher {
    public let socket: any VerdictSocket
    /// The queue every message names (read once: the socket is an existential).
    private let queue: UInt32
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    /// The open accept run: its last id and how many packets it covers.
    private var runLastID: UInt32 = 0
    private var runLength = 0
    /// Packets whose verdict is recorded but not yet sent.
    public private(set) var pending = 0
    /// When the oldest pending verdict was recorded (monotonic ns), for the flush timer.
    public private(set) var oldestPending: Int64 = 0

    /// Messages sent, packets covered, and send failures. A failed send is retried once; when
    /// the retry fails too, the buffer's verdicts are counted in `lostVerdicts` (their packets
    /// stay queued until a later accept batch covers them, i.e. they fail open, or the socket
    /// closes) and the last error is kept for the caller to log.
    public private(set) var messagesSent = 0
    public private(set) var sendCalls = 0
    public private(set) var sendErrors = 0
    public private(set) var lostVerdicts = 0
    public private(set) var lastSendError: SystemCallError? = nil
    /// Verdicts written to the buffer but not yet sent (for `lostVerdicts`).
    private var bufferedVerdicts = 0

    /// One verdict message: nlmsghdr 16 + nfgenmsg 4 + NFQA_VERDICT_HDR attribute 12 = 32 bytes.
    static let messageSize = 32

    public init(_ socket: any VerdictSocket, capacity: Int) {
        self.socket = socket
        queue = UInt32(socket.queue)
        // Worst case every packet of a receive batch alternates verdicts: one message each.
        buffer = .allocate(byteCount: max(capacity, 16) * Self.messageSize * 2, alignment: 8)
    }

    deinit { buffer.deallocate() }

    /// The oldest id still held by the caller, nil when none: no batch may reach it.
    /// Set it the moment a packet is held: the open run holds only older ids (arrival order),
    /// so it stays valid, and the floor only rises as held packets are settled.
    public var holdFloor: UInt32? = nil

    /// Whether queue id `a` comes before `b` (ids wrap, as the kernel's `after()` allows).
    @inline(__always)
    static func precedes(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }

    /// Records the verdict for the next packet in arrival order.
    @inline(__always)
    public func record(_ id: UInt32, _ verdict: QueueVerdict, now: Int64) {
        if pending == 0 { oldestPending = now }
        pending += 1
        switch verdict {
        case .accept:
            if let floor = holdFloor, !Self.precedes(id, floor) {
                // A batch naming this id would also give the held packet its verdict.
                closeRun()
                put(NFQNL_MSG_VERDICT, id, NF_ACCEPT, covering: 1)
                return
            }
            runLastID = id
            runLength += 1
        case .drop:
            // The accepts before it first (FIFO), then this id alone.
            closeRun()
            put(NFQNL_MSG_VERDICT, id, NF_DROP, covering: 1)
        }
    }

    /// Records the verdict of a packet that was held: its own message, whatever it is.
    public func recordHeld(_ id: UInt32, _ verdict: QueueVerdict, now: Int64) {
        if pending == 0 { oldestPending = now }
        pending += 1
        closeRun()
        put(NFQNL_MSG_VERDICT, id, verdict.netfilterValue, covering: 1)
    }

    private func closeRun() {
        guard runLength > 0 else { return }
        put(NFQNL_MSG_VERDICT_BATCH, runLastID, NF_ACCEPT, covering: runLength)
        runLength = 0
    }

    @inline(__always)
    private func put(_ type: nfqnl_msg_types, _ id: UInt32, _ verdict: Int32, covering: Int) {
        if used + Self.messageSize * 2 > buffer.count { sendBuffer() }
        let base = (buffer.baseAddress! + used).assumingMemoryBound(to: CChar.self)
        let nlh = nfq_nlmsg_put(base, Int32(type.rawValue), queue)!
        nfq_nlmsg_verdict_put(nlh, Int32(bitPattern: id), verdict)
        used += Int(mnl_align(nlh.pointee.nlmsg_len))
        bufferedVerdicts += covering
    }

    private func sendBuffer() {
        guard used > 0 else { return }
        let bytes = UnsafeRawBufferPointer(start: buffer.baseAddress, count: used)
        do {
            try socket.send(bytes)
            sendCalls += 1
        } catch {
            // One retry: the send already retried ENOBUFS/ENOMEM/EAGAIN; anything else is rare
            // enough that a second try costs nothing.
            sendErrors += 1
            do {
                try socket.send(bytes)
                sendCalls += 1
            } catch {
                sendErrors += 1
                lostVerdicts += bufferedVerdicts
                lastSendError = error
            }
        }
        used = 0
        bufferedVerdicts = 0
    }

    /// Takes the error of the last lost buffer (nil when none since the last call), for logging.
    public func takeSendError() -> SystemCallError? {
        defer { lastSendError = nil }
        return lastSendError
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
