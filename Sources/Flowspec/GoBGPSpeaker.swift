#if canImport(Glibc)
import Glibc
#endif
import PacketParser
import Synchronization

/// Drives gobgpd: by default runs it as the agent's child (generated configuration, restarted
/// when it dies, gone with the agent however the agent goes), or talks to an operator's gobgpd
/// at its API. Routes go in and out through the `gobgp` CLI, which is the interface Debian's
/// package keeps stable across its gRPC API's versions.
public final class GoBGPSpeaker: Sendable {
    public enum Event: Sendable {
        case started(pid: Int32)
        /// `log`: the speaker's last log lines.
        case exited(code: Int32, restartIn: Double, log: String)
        case startFailed(String)
    }

    public let config: FlowspecConfig
    /// The runtime directory (configuration, API socket, log, the announced routes for
    /// `reflectguard flowspec show`).
    public let directory: String
    /// The gRPC target the CLI dials.
    public let target: String
    public var runsDaemon: Bool { config.speaker == .gobgpd }
    private let onEvent: @Sendable (Event) -> Void

    private let childPid = Atomic<Int32>(0)
    private let stopping = Atomic<Bool>(false)
    /// Speaker starts so far: a new one has an empty RIB, so the routes go in again.
    public let generation = Atomic<UInt64>(0)
    public let restarts = Atomic<UInt64>(0)
    /// The supervising thread, joined by `stop`.
    private let thread = Mutex<pthread_t?>(nil)

    public init(config: FlowspecConfig, directory: String = GoBGPSpeaker.runtimeDirectory(),
                onEvent: @escaping @Sendable (Event) -> Void) {
        self.config = config
        self.directory = directory
        if case .external(let api) = config.speaker { target = api } else { target = "unix://\(directory)/gobgp.sock" }
        self.onEvent = onEvent
    }

    /// `/run/reflectguard/flowspec-NETNS`: one agent per network namespace, and the namespace's
    /// inode names it, so `reflectguard flowspec show` run in the same namespace finds it.
    public static func runtimeDirectory() -> String {
        var st = stat()
        let ns = stat("/proc/self/ns/net", &st) == 0 ? String(st.st_ino) : "0"
        return "/run/reflectguard/flowspec-net\(ns)"
    }

    /// Writes the configuration and starts the supervising thread (own gobgpd only). Throws when
    /// gobgpd is not installed or the directory cannot be made; the agent then runs without
    /// escalation.
    public func start() throws(FlowspecError) {
        try makeDirectory()
        try publish([])
        guard runsDaemon else { return }
        guard let daemon = ChildProcess.find("gobgpd") else {
            throw FlowspecError("gobgpd not found in /usr/sbin, /usr/bin, /sbin, /bin (install the gobgpd package)")
        }
        guard ChildProcess.find("gobgp") != nil else {
            throw FlowspecError("gobgp (the CLI) not found (install the gobgpd package)")
        }
        let routerID = config.routerID ?? Self.derivedRouterID(config)
        try write(GoBGP.configuration(config, routerID: routerID), to: "\(directory)/gobgpd.toml")
        let argv = [daemon, "-f", "\(directory)/gobgpd.toml", "-t", "toml", "--api-hosts", target,
                    "--pprof-disable", "-p", "-l", "info"]
        let t = startThread { [self] in supervise(argv) }
        thread.withLock { $0 = t }
    }

    /// Whether the agent's gobgpd runs now.
    public var isRunning: Bool { childPid.load(ordering: .acquiring) > 0 }

    /// The last lines of the agent's gobgpd log (empty for an external speaker).
    public func lastLog() -> String { runsDaemon ? Self.tail("\(directory)/gobgpd.log") : "" }

    /// Stops the speaker (its session closes, so the upstream withdraws every route) and waits
    /// for the supervising thread.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        let pid = childPid.load(ordering: .acquiring)
        if pid > 0 { kill(pid, SIGTERM) }
        if let t = thread.withLock({ t in defer { t = nil }; return t }) { pthread_join(t, nil) }
        // Nothing is announced any more; what is left would mislead `flowspec show`.
        for f in ["gobgpd.toml", "gobgp.sock", "gobgpd.log", "announced"] { unlink("\(directory)/\(f)") }
        rmdir(directory)
    }

    /// Runs on its own thread for the agent's lifetime: PR_SET_PDEATHSIG follows the thread that
    /// forked, so it must not be a pool thread that may exit while the agent lives.
    private func supervise(_ argv: [String]) {
        var backoff = 1.0
        while !stopping.load(ordering: .acquiring) {
            let logPath = "\(directory)/gobgpd.log"
            unlink("\(directory)/gobgp.sock")
            let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            let started = monotonicSeconds()
            var code: Int32 = -1
            do throws(FlowspecError) {
                guard log >= 0 else { throw FlowspecError("open \(logPath): \(String(cString: strerror(errno)))") }
                let pid = try ChildProcess.start(argv[0], argv, output: log)
                close(log)
                childPid.store(pid, ordering: .releasing)
                if stopping.load(ordering: .acquiring) { kill(pid, SIGTERM) }
                generation.add(1, ordering: .releasing)
                onEvent(.started(pid: pid))
                code = ChildProcess.wait(pid)
                childPid.store(0, ordering: .releasing)
            } catch {
                if log >= 0 { close(log) }
                onEvent(.startFailed(error.message))
            }
            if stopping.load(ordering: .acquiring) { break }
            // A speaker that ran a while gets restarted at once; one that keeps dying, slower.
            if monotonicSeconds() - started > 60 { backoff = 1 }
            restarts.add(1, ordering: .relaxed)
            onEvent(.exited(code: code, restartIn: backoff, log: Self.tail(logPath)))
            let until = monotonicSeconds() + backoff
            while monotonicSeconds() < until, !stopping.load(ordering: .acquiring) { usleep(100_000) }
            backoff = min(30, backoff * 2)
        }
    }

    // MARK: the CLI

    private func cli(_ args: [String]) throws(FlowspecError) -> String {
        let r = try ChildProcess.run(["gobgp", "--target", target] + args)
        guard r.status == 0 else {
            let text = r.output.split(separator: "\n").last.map(String.init) ?? ""
            throw FlowspecError("gobgp \(args.joined(separator: " ")): exit \(r.status): \(text)")
        }
        return r.output
    }

    public func announce(_ r: FlowspecRoute) throws(FlowspecError) { _ = try cli(GoBGP.addArguments(r)) }

    public func withdraw(_ r: FlowspecRoute) throws(FlowspecError) { _ = try cli(GoBGP.deleteArguments(r)) }

    /// The session's state (`established`, `active`, `idle`, …).
    public func sessionState() throws(FlowspecError) -> String {
        let out = try cli(["neighbor", config.peer.description])
        guard let s = GoBGP.sessionState(out) else { throw FlowspecError("gobgp neighbor: no state in its answer") }
        return s
    }

    /// The speaker's own table of Flowspec routes, as the CLI prints it.
    public func rib() throws(FlowspecError) -> String {
        try cli(["global", "rib", "-a", "ipv4-flowspec"]) + cli(["global", "rib", "-a", "ipv6-flowspec"])
    }

    private func makeDirectory() throws(FlowspecError) {
        for d in ["/run/reflectguard", directory] {
            if mkdir(d, d == directory ? 0o700 : 0o755) != 0, errno != EEXIST {
                throw FlowspecError("mkdir \(d): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The routes the running agent recorded as announced (`publish`), nil when none is recorded.
    public func recorded() -> [String]? {
        let fd = open("\(directory)/announced", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// Records the routes announced now for `reflectguard flowspec show` (one per line), and
    /// those whose withdrawal the speaker refused so far, marked `withdrawing ` (still announced,
    /// as far as anyone can tell).
    public func publish(_ routes: [FlowspecRoute], unwithdrawn: [FlowspecRoute] = []) throws(FlowspecError) {
        try write((routes.map { "\($0)\n" } + unwithdrawn.map { "\(Self.withdrawing)\($0)\n" }).joined(), to: "\(directory)/announced")
    }

    /// The mark of a route in the record that is being withdrawn.
    public static let withdrawing = "withdrawing "

    /// The record's lines split into the routes announced and those still being withdrawn.
    public static func split(record lines: [String]) -> (announced: [String], withdrawing: [String]) {
        (lines.filter { !$0.hasPrefix(withdrawing) }, lines.filter { $0.hasPrefix(withdrawing) }.map { String($0.dropFirst(withdrawing.count)) })
    }

    // MARK: helpers

    /// auto: the address this router reaches an IPv4 peer from (what the session uses), else
    /// the local AS read as an IPv4 address (non-zero, unique per AS as RFC 6286 asks).
    static func derivedRouterID(_ c: FlowspecConfig) -> IPAddress {
        if c.peer.isIPv4Mapped {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            if fd >= 0 {
                defer { close(fd) }
                var peer = sockaddr_in()
                peer.sin_family = sa_family_t(AF_INET)
                peer.sin_port = UInt16(179).bigEndian
                peer.sin_addr.s_addr = c.peer.v4Value.bigEndian
                var local = sockaddr_in()
                var len = socklen_t(MemoryLayout<sockaddr_in>.size)
                let ok = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
                } && withUnsafeMutablePointer(to: &local) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) == 0 }
                }
                let v = UInt32(bigEndian: local.sin_addr.s_addr)
                if ok, v != 0 { return IPAddress(v4: v) }
            }
        }
        return IPAddress(v4: c.localAS)
    }

    private func write(_ text: String, to path: String) throws(FlowspecError) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FlowspecError("open \(tmp): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard n == bytes.count, rename(tmp, path) == 0 else {
            throw FlowspecError("writing \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The last lines of a log file, for events.
    static func tail(_ path: String, lines: Int = 3) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        let from = max(0, size - 4096)
        lseek(fd, from, SEEK_SET)
        var buf = [UInt8](repeating: 0, count: Int(size - from))
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return "" }
        return String(decoding: buf[0..<n], as: UTF8.self).split(separator: "\n").suffix(lines).joined(separator: " | ")
    }
}

/// Starts a thread running `body` (joined by its owner).
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var t = pthread_t()
    let r = pthread_create(&t, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, box)
    precondition(r == 0, "pthread_create: \(r)")
    return t
}
