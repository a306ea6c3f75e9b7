import Foundation
import Glibc
import Synchronization
import Testing
@testable import Agent

/// The control socket against hostile and broken clients: the server runs its lifecycle-loop
/// `step` on its own thread over an abstract socket of its own (never the agent's `@reflectguard`,
/// which a running agent may hold), and every misbehaving client must leave the others served.
/// Deadlines are set long where a client must be answered despite others (a server that waited
/// on one client would take minutes), so no assertion depends on the machine's speed.
@Suite struct ControlServerTests {
    @Test func aRequestIsAnsweredAndTheClientReadsTheReply() throws {
        let s = try RunningControl()
        #expect(ControlChannel.send(.reload, timeout: 30, socketName: s.name).ok == .ok("done reload"))
        #expect(ControlChannel.send(.stop, timeout: 30, socketName: s.name).ok == .ok("done stop"))
        #expect(s.handled == [.reload, .stop])
    }

    /// Slowloris: more clients than the table holds send half a line and keep the connection.
    /// The oldest give way, and a real request is answered while the rest still hold on.
    @Test func clientsHoldingHalfALineDoNotHoldUpARequest() throws {
        var limits = ControlServer.Limits()
        limits.requestDeadline = 600_000_000_000
        let s = try RunningControl(limits: limits)
        let holders = try (0..<(limits.maxClients + 8)).map { _ in
            let c = try ControlClient(s.name)
            #expect(c.send(Array("relo".utf8)))
            return c
        }
        #expect(ControlChannel.send(.reload, timeout: 60, socketName: s.name).ok == .ok("done reload"))
        // The eight oldest were evicted for room (closed without a reply); the newest still wait.
        for c in holders.prefix(8) { #expect(c.reply(within: 30) == "") }
        #expect(holders.suffix(limits.maxClients - 1).allSatisfy { $0.quietAndOpen })
        #expect(s.handled == [.reload])
    }

    /// A client that sends nothing, or half a line, is closed at its deadline with a refusal.
    @Test func aSilentClientIsClosedAtItsDeadline() throws {
        var limits = ControlServer.Limits()
        limits.requestDeadline = 200_000_000
        let s = try RunningControl(limits: limits)
        let silent = try ControlClient(s.name)
        let half = try ControlClient(s.name)
        #expect(half.send(Array("sto".utf8)))
        for c in [silent, half] { #expect(c.reply(within: 30) == "refused 2\nno request line within 200 ms") }
        #expect(s.handled.isEmpty)
    }

    /// A line of a megabyte: the server reads one byte past the limit, refuses and closes; the
    /// client's write then fails (the server is gone), its reply is still there to read.
    @Test func aHugeLineIsRefusedAfterSixtyFiveBytes() throws {
        let s = try RunningControl()
        let c = try ControlClient(s.name)
        #expect(!c.send([UInt8](repeating: 0x41, count: 1 << 20)), "the server closed before taking a megabyte")
        #expect(c.reply(within: 30) == "refused 2\nrequest longer than 64 bytes")
        // "reload" followed by more than fits a line is not a reload.
        let padded = try ControlClient(s.name)
        #expect(padded.send(Array(("reload" + String(repeating: " ", count: 100) + "\n").utf8)))
        #expect(padded.reply(within: 30) == "refused 2\nrequest longer than 64 bytes")
        #expect(s.handled.isEmpty)
        #expect(ControlChannel.send(.reload, timeout: 30, socketName: s.name).ok == .ok("done reload"))
    }

    /// Binary garbage is an unknown request, echoed back printable only (no control sequences
    /// reach the client's terminal).
    @Test func binaryGarbageIsRefusedAndEchoedPrintable() throws {
        let s = try RunningControl()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let c = try ControlClient(s.name)
            let garbage = (0..<40).map { _ in UInt8.random(in: 0...255, using: &rng) }.filter { $0 != 0x0a }
            #expect(c.send(garbage + [0x0a]))
            let reply = try #require(c.reply(within: 30))
            #expect(reply.hasPrefix("refused 2\nunknown request '"), "\(reply)")
            #expect(reply.utf8.allSatisfy { $0 == 0x0a || (0x20..<0x7f).contains($0) }, "\(Array(reply.utf8))")
        }
        #expect(s.handled.isEmpty)
    }

    /// Clients that send a request and never read the reply (nor close): each reply goes into its
    /// socket buffer without the server waiting, and the next client is served.
    @Test func clientsThatDoNotReadTheirReplyHoldNobodyUp() throws {
        let s = try RunningControl(reply: String(repeating: "x", count: 60_000))
        let deaf = try (0..<20).map { _ in
            let c = try ControlClient(s.name, receiveBuffer: 1024)
            #expect(c.send(Array("reload\n".utf8)))
            return c
        }
        let answered = ControlChannel.send(.stop, timeout: 60, socketName: s.name)
        #expect(answered.ok == .ok(String(repeating: "x", count: 60_000)))
        #expect(s.handled.count == 21)
        withExtendedLifetime(deaf) {}
    }

    /// Many connections open at once, each asking as it connects (as `ControlChannel.send`
    /// does), replies read only once all have asked: every one is answered.
    @Test func manyClientsAtOnceAreAllAnswered() throws {
        let s = try RunningControl()
        let clients = try (0..<60).map { _ in
            let c = try ControlClient(s.name)
            #expect(c.send(Array("reload\n".utf8)))
            return c
        }
        for c in clients { #expect(c.reply(within: 30) == "ok\ndone reload") }
        #expect(s.handled.count == 60)
    }

    /// A peer whose uid may not control the agent is refused at accept: its reply arrives
    /// although it never sent a byte, and the handler never runs.
    @Test func anUnauthorizedPeerIsRefusedBeforeItIsRead() throws {
        let s = try RunningControl(authorized: { _ in false })
        let c = try ControlClient(s.name)
        let reply = try #require(c.reply(within: 30))
        #expect(reply.hasPrefix("refused 1\nuid \(getuid()) may not control the agent"), "\(reply)")
        #expect(ControlChannel.send(.stop, timeout: 30, socketName: s.name).ok?.exitCode == 1)
        #expect(s.handled.isEmpty)
    }

    /// Asking who holds the lock (connect, close) gets no answer and runs nothing; a request
    /// without its newline, ended by the client's shutdown, is still a request.
    @Test func aProbeIsNoRequestAndAnUnterminatedLineIs() throws {
        let s = try RunningControl()
        do { _ = try ControlClient(s.name) }
        let c = try ControlClient(s.name)
        #expect(c.send(Array("reload".utf8)))
        c.shutdownWrite()
        #expect(c.reply(within: 30) == "ok\ndone reload")
        #expect(s.handled == [.reload])
    }
}

extension Result where Success == ControlChannel.Reply {
    var ok: ControlChannel.Reply? { try? get() }
}

extension ControlChannel.Reply {
    var exitCode: Int32? { if case .refused(let code, _) = self { return code } else { return nil } }
}

/// A control server on an abstract socket of its own, stepping on its own thread until deinit.
final class RunningControl: Sendable {
    let name: String
    private let listener: Int32
    private let stopping = Atomic<Bool>(false)
    private let commands = Mutex<[ControlChannel.Command]>([])
    private let finished = DispatchSemaphore(value: 0)

    var handled: [ControlChannel.Command] { commands.withLock { $0 } }

    init(limits: ControlServer.Limits = .init(), authorized: @escaping @Sendable (UInt32) -> Bool = { _ in true },
         reply: String? = nil) throws {
        // Set up in locals: an init that throws once every property is set would run deinit,
        // which waits for a thread never started.
        let name = "reflectguard-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        let bound = NamespaceLock.withAddress(name: name) { bind(listener, $0, $1) }
        try #require(bound == 0 && listen(listener, 64) == 0, "bind/listen: \(errno)")
        self.name = name
        self.listener = listener
        Thread { [self] in
            let server = ControlServer(listener: listener, limits: limits, authorized: authorized)
            while !stopping.load(ordering: .relaxed) {
                server.step { command in
                    commands.withLock { $0.append(command) }
                    return .ok(reply ?? "done \(command.rawValue)")
                }
                usleep(2_000)
            }
            finished.signal()
        }.start()
    }

    deinit {
        stopping.store(true, ordering: .relaxed)
        finished.wait()
        close(listener)
    }
}

/// A client that misbehaves on request: blocking socket, writes what it is told, reads when asked.
final class ControlClient {
    let fd: Int32

    init(_ name: String, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let fd = self.fd
        let connected = NamespaceLock.withAddress(name: name) { connect(fd, $0, $1) }
        try #require(connected == 0, "connect: \(errno)")
    }

    deinit { close(fd) }

    /// Writes all of `bytes`; false when the peer closed first.
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Everything the server sends until it closes; nil when it did not close within `seconds`.
    func reply(within seconds: Double) -> String? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return String(decoding: out, as: UTF8.self) }
            out += buffer[0..<n]
        }
        return nil
    }

    /// Nothing to read and not closed by the server.
    var quietAndOpen: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 0
    }
}
