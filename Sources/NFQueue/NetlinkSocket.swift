#if canImport(Glibc)
import Glibc
#endif
import CNetfilterQueue

/// A NETLINK_NETFILTER socket through libmnl, opened the one way both of the agent's netfilter
/// sockets need it (the queue's and conntrack's): open, size the receive buffer, set the caller's
/// options, bind. The receive buffer comes first, so that a flood (packets, or conntrack events)
/// arriving right after the bind finds room.
public final class NetlinkSocket {
    /// libmnl's `struct mnl_socket *`.
    let handle: OpaquePointer
    public let fd: Int32
    /// The port id the kernel gave the bind (MNL_SOCKET_AUTOPID).
    public let portID: UInt32
    /// Set when SO_RCVBUFFORCE was refused and SO_RCVBUF (capped by net.core.rmem_max) used.
    public let receiveBufferWarning: String?
    private var closed = false

    /// `groups`: the multicast groups to join (mnl_socket_bind's mask, 0 for none). `configure`
    /// sets the caller's own options between the buffer and the bind.
    public init(receiveBufferBytes: Int, groups: UInt32 = 0,
                configure: (Int32) throws(SystemCallError) -> Void = { _ in }) throws(SystemCallError) {
        let nl = try syscallPointer("mnl_socket_open(NETLINK_NETFILTER)") { mnl_socket_open(NETLINK_NETFILTER) }
        let fd = mnl_socket_get_fd(nl)
        do throws(SystemCallError) {
            var size = Int32(clamping: receiveBufferBytes)
            let len = socklen_t(MemoryLayout<Int32>.size)
            // SO_RCVBUFFORCE passes rmem_max (it needs CAP_NET_ADMIN, which the agent has); else
            // SO_RCVBUF, capped by net.core.rmem_max, with a warning.
            do throws(SystemCallError) {
                _ = try syscallValue("setsockopt(SO_RCVBUFFORCE)") { setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, len) }
                receiveBufferWarning = nil
            } catch {
                _ = try syscallValue("setsockopt(SO_RCVBUF)") { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, len) }
                receiveBufferWarning = "SO_RCVBUFFORCE failed (\(error.reason)); SO_RCVBUF is capped by net.core.rmem_max"
            }
            try configure(fd)
            _ = try syscallValue("mnl_socket_bind(groups \(groups))") { mnl_socket_bind(nl, groups, pid_t(MNL_SOCKET_AUTOPID)) }
        } catch {
            mnl_socket_close(nl)
            throw error
        }
        handle = nl
        self.fd = fd
        portID = mnl_socket_get_portid(nl)
    }

    deinit { close() }

    /// Sends netlink messages to the kernel (port 0) in one call.
    public func send(_ bytes: UnsafeRawBufferPointer, name: @autoclosure () -> String) throws(SystemCallError) -> IOResult<Int> {
        let h = handle
        return try syscall(name()) { mnl_socket_sendto(h, bytes.baseAddress, bytes.count) }
    }

    public func close() {
        guard !closed else { return }
        closed = true
        mnl_socket_close(handle)
    }
}
