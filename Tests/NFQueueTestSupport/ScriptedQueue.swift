#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue
import NFQueue

/// The kernel's side of one queue, as nfnetlink_queue keeps it: the ids waiting for a verdict in
/// arrival order. A single verdict takes its id (an id not waiting is -ENOENT); a batch verdict
/// takes every waiting id from the oldest up to the one it names, and stops at the first later id
/// (nfqnl_recv_verdict_batch, ids compared with wrap-around).
public final class KernelQueueModel {
    public private(set) var waiting: [UInt32] = []
    /// Every verdict each id got (exactly one is right).
    public private(set) var given: [UInt32: [UInt32]] = [:]
    /// Single verdicts naming an id that was not waiting.
    public private(set) var unknown: [UInt32] = []

    public init() {}

    public func enqueue(_ id: UInt32) { waiting.append(id) }

    public func apply(_ m: VerdictMessage) {
        if m.batch {
            while let first = waiting.first, Int32(bitPattern: first &- m.id) <= 0 {
                waiting.removeFirst()
                given[first, default: []].append(m.verdict)
            }
        } else if let i = waiting.firstIndex(of: m.id) {
            waiting.remove(at: i)
            given[m.id, default: []].append(m.verdict)
        } else {
            unknown.append(m.id)
        }
    }

    /// The one verdict `id` got: true accept, false drop, nil none yet (or more than one).
    public func verdict(_ id: UInt32) -> Bool? {
        guard let v = given[id], v.count == 1 else { return nil }
        return v[0] == UInt32(NF_ACCEPT)
    }
}

/// A queue transport driven by a script instead of the kernel: each receive hands the receiver
/// the next batch of packet messages (built at the kernel's layout, into the receiver's own
/// iovecs, as recvmmsg fills them); an empty batch is a drained socket. What the worker sends is
/// decoded at the C structs' offsets and applied to a `KernelQueueModel`; every step is recorded
/// in `events`, so a test reads the order of receives, verdicts, unbind and close.
public final class ScriptedTransport: QueueTransport {
    public enum Event: Equatable, CustomStringConvertible {
        case received([UInt32])
        case sent([VerdictMessage])
        case sendFailed(Int32)
        case malformed(String)
        case unbind
        case close

        public var description: String {
            switch self {
            case .received(let ids): "received \(ids)"
            case .sent(let m): "sent \(m)"
            case .sendFailed(let e): "send failed \(e)"
            case .malformed(let s): "malformed \(s)"
            case .unbind: "unbind"
            case .close: "close"
            }
        }
    }

    public let configuration: QueueConfiguration
    public var queue: UInt16 { configuration.queue }
    public let fd: Int32 = -1
    public private(set) var events: [Event] = []
    public let kernel = KernelQueueModel()
    private var script: [[PacketMessage]]
    /// errnos the next sends fail with, first first.
    public var failingSends: [Int32] = []
    /// Called by a receive that finds the script used up (a test stops the worker here).
    public var whenScriptEnds: (() -> Void)? = nil
    /// Called after the n-th receive that returned packets (1, 2, …).
    public var afterReceive: ((Int) -> Void)? = nil
    /// errnos the next receives fail with, first first.
    public var failingReceives: [Int32] = []
    /// For each receive that follows a drained socket or a short batch (the socket had no more):
    /// the ids still waiting in the kernel then. A worker that never lets a verdict wait for a
    /// later packet has sent them all by then.
    public private(set) var waitingAfterDrain: [[UInt32]] = []
    private var drained = false
    private var receives = 0

    public init(_ configuration: QueueConfiguration, script: [[PacketMessage]]) {
        self.configuration = configuration
        self.script = script
    }

    public func receiveMessages(_ headers: UnsafeMutablePointer<rg_mmsghdr>, count: Int, wait: Bool) throws(SystemCallError) -> IOResult<Int> {
        if drained { waitingAfterDrain.append(kernel.waiting) }
        drained = true
        if !failingReceives.isEmpty {
            throw SystemCallError("recvmmsg(test)", errno: failingReceives.removeFirst())
        }
        guard !script.isEmpty else {
            whenScriptEnds?()
            return .wouldBlock
        }
        var batch = script.removeFirst()
        if batch.isEmpty { return .wouldBlock }
        if batch.count > count {
            script.insert(Array(batch[count...]), at: 0)
            batch = Array(batch[..<count])
        }
        for (i, p) in batch.enumerated() {
            let bytes = p.bytes
            let iov = headers[i].msg_hdr.msg_iov!.pointee
            let n = min(bytes.count, iov.iov_len)
            bytes.withUnsafeBytes { iov.iov_base!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            headers[i].msg_len = UInt32(n)
            headers[i].msg_hdr.msg_flags = n < bytes.count ? Int32(MSG_TRUNC) : 0
            kernel.enqueue(p.id)
        }
        events.append(.received(batch.map(\.id)))
        drained = batch.count < count
        receives += 1
        afterReceive?(receives)
        return .processed(batch.count)
    }

    public func send(_ messages: UnsafeRawBufferPointer) throws(SystemCallError) {
        if !failingSends.isEmpty {
            let e = failingSends.removeFirst()
            events.append(.sendFailed(e))
            throw SystemCallError("mnl_socket_sendto(test)", errno: e)
        }
        do {
            let decoded = try VerdictMessage.decode(Array(messages))
            events.append(.sent(decoded))
            for m in decoded { kernel.apply(m) }
        } catch {
            events.append(.malformed("\(error)"))
        }
    }

    public func unbind() { events.append(.unbind) }
    public func close() { events.append(.close) }

    /// Every verdict message sent, in order.
    public var verdicts: [VerdictMessage] {
        var out: [VerdictMessage] = []
        for case .sent(let m) in events { out += m }
        return out
    }
}
