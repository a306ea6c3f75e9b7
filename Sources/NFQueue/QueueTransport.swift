import CNetfilterQueue

/// What the verdict batcher needs of its socket: the queue its messages name, and one send of a
/// buffer of netlink messages. `QueueSocket` is the kernel's; unit tests put a recorder in its
/// place and read back the messages byte for byte.
public protocol VerdictSocket: AnyObject {
    var queue: UInt16 { get }
    /// Sends the messages in one call; throws when the kernel took none of them.
    func send(_ messages: UnsafeRawBufferPointer) throws(SystemCallError)
}

/// Everything a worker does with its queue: receive packet messages, send verdicts, and at the
/// end unbind and close. `QueueSocket` is the kernel's; a test transport hands the receiver
/// messages laid out as the kernel lays them out and records what comes back, so the packet path
/// runs without root.
public protocol QueueTransport: VerdictSocket {
    var configuration: QueueConfiguration { get }
    /// A descriptor that polls readable when messages wait (-1: none; poll then only times out).
    var fd: Int32 { get }
    /// recvmmsg(2) into `headers` (each with one iovec of the receiver's slot): fills up to `count`
    /// messages, their lengths in `msg_len`. `wait`: block (up to the receive timeout) for the
    /// first one; otherwise `.wouldBlock` at once when none waits.
    func receiveMessages(_ headers: UnsafeMutablePointer<rg_mmsghdr>, count: Int, wait: Bool) throws(SystemCallError) -> IOResult<Int>
    /// Unbinds the queue (after the last verdict). Safe to call twice.
    func unbind()
    func close()
}
