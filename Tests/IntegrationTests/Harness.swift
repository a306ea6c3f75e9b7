import Foundation
import Testing
import TestSupport

/// Shared plumbing for the real-kernel tests: the reflectguard binary, a lab of three network
/// namespaces per test (unique names, removed on exit whatever happens), processes inside them,
/// floods from trafgen, and counters on the protected host. Directories, tools and the binary's
/// lookup are `TestEnvironment`'s.
enum Env {
    /// The binary under test (`TestEnvironment.binary`). Tests call `requireReady()` first, which
    /// fails when it is missing.
    static var binary: String { TestEnvironment.binary ?? "reflectguard" }

    static let tools = ["ip", "nft", "iptables-nft", "ip6tables-nft", "trafgen", "python3", "setpriv"]

    /// Why these tests cannot run here, or nil when they can.
    static let missing: String? = {
        if getuid() != 0 { return "needs root (network namespaces, NFQUEUE)" }
        for t in tools where TestEnvironment.which(t) == nil { return "needs '\(t)' (scripts/setup.sh installs it)" }
        if TestEnvironment.binary == nil {
            return "needs the reflectguard binary (swift build, or set REFLECTGUARD_BIN)"
        }
        return nil
    }()

    /// Normally a missing prerequisite skips the test; in CI it fails it.
    static var enabled: Bool { missing == nil || TestEnvironment.isCI }

    /// Fails the test (CI) with the reason; tests call it first.
    static func requireReady() throws {
        if let m = missing { try #require(Bool(false), "integration prerequisites: \(m)") }
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a shell command to completion.
@discardableResult
func sh(_ command: String, check: Bool = true) throws -> CommandResult {
    let (status, out, err) = try TestEnvironment.run("/bin/bash", ["-c", command])
    let r = CommandResult(status: status, stdout: out, stderr: err)
    if check && r.status != 0 {
        throw HarnessError("`\(command)` exited \(r.status): \(r.stderr.suffix(2000))")
    }
    return r
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// `read`'s value once it has stopped changing: read every 100 ms until it has not moved for half
/// a second (`seconds` at most, then the last). For counters after a burst: a fixed sleep can be
/// outlasted on a loaded machine, with packets still in a veth or in the agent's queue.
func settled<T: Equatable>(within seconds: Double = 15, _ read: () throws -> T) throws -> T {
    let deadline = Date().addingTimeInterval(seconds)
    var last = try read(), same = 0
    while same < 5 && Date() < deadline {
        usleep(100_000)
        let now = try read()
        same = now == last ? same + 1 : 0
        last = now
    }
    return last
}

/// One three-namespace lab (scripts/netns-lab.sh) with names unique to this test and process.
final class LabNet {
    let prefix: String
    let inet: String, router: String, protected: String
    let routerMAC: String, inetMAC: String
    private var children: [Process] = []
    private var tempFiles: [String] = []

    /// `family` starts the namespace names, so each test file's labs are told apart (and cleaned
    /// up) by name.
    init(_ name: String, family: String = "rgt-inline") throws {
        prefix = "\(family)-\(name)-\(getpid() % 100000)"
        let r = try sh("RG_LAB_PREFIX=\(prefix) '\(TestEnvironment.packageDirectory.path)/scripts/netns-lab.sh' up")
        var env: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { env[String(kv[0])] = String(kv[1]) }
        }
        inet = env["LAB_INET"] ?? "\(prefix)-inet"
        router = env["LAB_ROUTER"] ?? "\(prefix)-rtr"
        protected = env["LAB_PROTECTED"] ?? "\(prefix)-prot"
        routerMAC = env["LAB_ROUTER_MAC"] ?? ""
        inetMAC = env["LAB_INET_MAC"] ?? ""
        try installCounters()
    }

    /// Kills what the test started (SIGKILL: it is cleanup) and removes the namespaces.
    func tearDown() {
        for c in children where c.isRunning { kill(c.processIdentifier, SIGKILL) }
        for c in children { c.waitUntilExit() }
        _ = try? sh("RG_LAB_PREFIX=\(prefix) '\(TestEnvironment.packageDirectory.path)/scripts/netns-lab.sh' down", check: false)
        for f in tempFiles { unlink(f) }
    }

    @discardableResult
    func exec(_ ns: String, _ command: String, check: Bool = true) throws -> CommandResult {
        try sh("ip netns exec \(ns) \(command)", check: check)
    }

    /// Starts a long-running process in a namespace; its stderr goes to a file the test reads.
    func spawn(_ ns: String, _ args: [String], stderrFile: String? = nil, stdoutFile: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") { p.executableURL = URL(fileURLWithPath: TestEnvironment.which("ip")!) }
        p.arguments = ["netns", "exec", ns] + args
        if let f = stderrFile {
            _ = FileManager.default.createFile(atPath: f, contents: nil)
            p.standardError = FileHandle(forWritingAtPath: f)
            tempFiles.append(f)
        } else {
            p.standardError = FileHandle.nullDevice
        }
        if let f = stdoutFile {
            _ = FileManager.default.createFile(atPath: f, contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: f)
            tempFiles.append(f)
        } else {
            p.standardOutput = FileHandle.nullDevice
        }
        try p.run()
        children.append(p)
        return p
    }

    func tempPath(_ tag: String) -> String {
        let p = NSTemporaryDirectory() + "\(prefix)-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        tempFiles.append(p)
        return p
    }

    // MARK: counters on the protected host

    /// The protected host's own view: spoofed SYN-ACKs and RSTs that reached it, counted before
    /// its TCP stack (which would answer them and hide them). Priority -400: before everything.
    private func installCounters() throws {
        let rules = """
            table inet rgcount {
              counter synack {}
              counter synack6 {}
              counter rst {}
              chain pre {
                type filter hook prerouting priority -400; policy accept;
                ip saddr 198.19.0.0/16 tcp flags & (syn|ack) == syn|ack counter name "synack"
                ip saddr 198.19.0.0/16 tcp flags & rst == rst counter name "rst"
                ip6 saddr 2001:db8:ff::/48 tcp flags & (syn|ack) == syn|ack counter name "synack6"
              }
            }
            """
        let f = tempPath("count.nft")
        try rules.write(toFile: f, atomically: true, encoding: .utf8)
        try exec(protected, "nft -f \(f)")
    }

    func protectedCount(_ name: String) throws -> Int {
        let r = try exec(protected, "nft list counter inet rgcount \(name)")
        guard let m = r.stdout.firstMatch(of: #/packets (\d+)/#), let n = Int(m.1) else {
            throw HarnessError("cannot read counter \(name): \(r.stdout)")
        }
        return n
    }

    func resetCounters() throws { try exec(protected, "nft reset counters table inet rgcount >/dev/null") }

    // MARK: floods

    enum FloodKind {
        case synack, rst
        /// RSTs from random 198.19.0.0/16 sources to every address of 198.18.2.0/24.
        case rstSpread
        /// SYN-ACKs from random 2001:db8:ff::/48 reflectors to 2001:db8:2::2.
        case synack6
        /// SYNs forged with a protected source (198.18.2.77), sent from the internet side towards
        /// the internet host: only the router's interfaces can tell they are spoofed (BCP 38).
        case forgedProtectedSyn
    }

    /// trafgen in the internet namespace: `count` forged packets from random 198.19.0.0/16
    /// reflectors (random ports, sequence and acknowledgment numbers) to 198.18.2.2. `gap` nil:
    /// as fast as trafgen goes. Bounded by `count`.
    /// `sport`: the IPv6 SYN-ACKs' source port as trafgen bytes (`drnd(2)`: random ports).
    func flood(_ kind: FloodKind, count: Int, gap: String?, background: Bool = false, sport: String = "const16(443)") throws -> Process? {
        let dst = routerMAC.split(separator: ":").map { "0x\($0)" }.joined(separator: ", ")
        let src = inetMAC.split(separator: ":").map { "0x\($0)" }.joined(separator: ", ")
        if kind == .synack6 {
            let config = """
                {
                  \(dst), \(src), 0x86, 0xdd,
                  0x60, 0x00, 0x00, 0x00, const16(20), 6, 64,
                  0x20, 0x01, 0x0d, 0xb8, 0x00, 0xff, drnd(2), 0, 0, 0, 0, 0, 0, drnd(2),
                  0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                  \(sport), drnd(2), drnd(4), drnd(4), 0x50, 0x12, const16(64240), csumtcp6(14, 54), const16(0),
                }
                """
            return try runTrafgen(config, count: count, gap: gap, background: background)
        }
        let flags: String, addresses: String, ports: String
        switch kind {
        case .synack: (flags, addresses, ports) = ("0x12", "198, 19, drnd(), drnd(), 198, 18, 2, 2", "const16(443), drnd(2)")
        case .rst: (flags, addresses, ports) = ("0x04", "198, 19, drnd(), drnd(), 198, 18, 2, 2", "const16(443), drnd(2)")
        case .rstSpread: (flags, addresses, ports) = ("0x04", "198, 19, drnd(), drnd(), 198, 18, 2, drnd()", "drnd(2), drnd(2)")
        case .forgedProtectedSyn: (flags, addresses, ports) = ("0x02", "198, 18, 2, 77, 198, 18, 1, 2", "drnd(2), const16(8080)")
        case .synack6: fatalError("handled above")
        }
        let config = """
            {
              \(dst), \(src), 0x08, 0x00,
              0x45, 0x00, const16(40), drnd(2), 0x40, 0x00, 64, 6, csumip(14, 33),
              \(addresses),
              \(ports), drnd(4), drnd(4), 0x50, \(flags), const16(64240), csumtcp(14, 34), const16(0),
            }
            """
        return try runTrafgen(config, count: count, gap: gap, background: background)
    }

    /// trafgen sending `config` (`count` packets in all) from the internet namespace's i0, or
    /// from `ns` on `device`.
    @discardableResult
    func runTrafgen(_ config: String, count: Int, gap: String?, background: Bool,
                    from ns: String? = nil, device: String = "i0") throws -> Process? {
        let f = tempPath("flood.cfg")
        try config.write(toFile: f, atomically: true, encoding: .utf8)
        var args = ["trafgen", "-o", device, "-c", f, "-n", "\(count)", "-q"]
        if let gap { args += ["-t", gap, "-P", "1"] }
        if background { return try spawn(ns ?? inet, args) }
        try exec(ns ?? inet, args.joined(separator: " ") + " >/dev/null 2>&1")
        return nil
    }

    // MARK: connections

    /// A TCP server (python's http.server, dual stack) in a namespace.
    func startServer(_ ns: String, port: Int) throws {
        _ = try spawn(ns, ["python3", "-m", "http.server", "--bind", "::", "\(port)"])
        // Wait until it listens.
        for _ in 0..<50 {
            if try exec(ns, "python3 -c \"import socket; socket.create_connection(('::1', \(port)), 1).close()\"",
                        check: false).status == 0 { return }
            usleep(100_000)
        }
        throw HarnessError("server on port \(port) in \(ns) did not come up")
    }

    /// The labs' client (scripts/lab-client.py, which the two-router lab uses too).
    private var clientPath: String { TestEnvironment.packageDirectory.path + "/scripts/lab-client.py" }

    /// `count` HTTP requests over fresh real-kernel TCP connections from `ns`, one after another;
    /// returns how many completed.
    func connect(from ns: String, to host: String, port: Int, count: Int) throws -> (ok: Int, total: Int) {
        let r = try exec(ns, "python3 \(clientPath) \(host) \(port) \(count)")
        return try Self.parseClient(r.stdout + " " + r.stderr)
    }

    /// The same, in the background (while a flood runs); read the result with `readClientResult`.
    func connectInBackground(from ns: String, to host: String, port: Int, count: Int) throws -> (Process, String) {
        let out = tempPath("client.out")
        let p = try spawn(ns, ["python3", clientPath, host, "\(port)", "\(count)"], stdoutFile: out)
        return (p, out)
    }

    static func readClientResult(_ p: Process, _ file: String) throws -> (ok: Int, total: Int) {
        p.waitUntilExit()
        return try parseClient((try? String(contentsOfFile: file, encoding: .utf8)) ?? "")
    }

    static func parseClient(_ text: String) throws -> (ok: Int, total: Int) {
        guard let m = text.firstMatch(of: #/RESULT (\d+) (\d+)/#), let ok = Int(m.1), let n = Int(m.2) else {
            throw HarnessError("client output: \(text)")
        }
        return (ok, n)
    }
}

/// The agent under test, run in the router namespace.
final class AgentProcess {
    let process: Process
    let logFile: String
    let outFile: String
    let lab: LabNet

    /// `launcher` runs before the binary in the router namespace (e.g. setpriv dropping privileges).
    init(_ lab: LabNet, _ args: [String], launcher: [String] = []) throws {
        self.lab = lab
        logFile = lab.tempPath("agent.log")
        outFile = lab.tempPath("agent.out")
        process = try lab.spawn(lab.router, launcher + [Env.binary, "run"] + args, stderrFile: logFile, stdoutFile: outFile)
        try waitForLog("\"event\":\"start\"", seconds: 20)
    }

    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }
    var output: String { (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "" }

    func waitForLog(_ needle: String, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if log.contains(needle) { return }
            if !process.isRunning { throw HarnessError("agent exited \(process.terminationStatus) before '\(needle)': \(log)") }
            usleep(50_000)
        }
        throw HarnessError("agent log has no '\(needle)' after \(seconds) s: \(log)")
    }

    func signal(_ s: Int32) { kill(process.processIdentifier, s) }

    /// SIGTERM and wait; returns the exit status.
    func stop() -> Int32 {
        signal(SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// The metrics text (the agent must have been started with --metrics).
    func metrics(port: Int) throws -> String {
        try lab.exec(lab.router, "curl -s --max-time 3 http://127.0.0.1:\(port)/metrics").stdout
    }

    static func value(_ metrics: String, _ name: String) -> Double {
        var total = 0.0
        for line in metrics.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { continue }
            let key = parts[0]
            if key == name || key.hasPrefix(name + "{") { total += Double(parts[1]) ?? 0 }
        }
        return total
    }
}
