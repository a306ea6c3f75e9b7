import CBPF
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VerdictEngine

/// A failed libbpf or bpf(2) step: the step, the errno text, and libbpf's own messages (the
/// verifier's log when a program is refused).
public struct BPFError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ step: String, _ code: Int32, log: Bool = true) {
        let e = code < 0 ? -code : code
        var d = "\(step): \(String(cString: strerror(e)))"
        if log {
            let l = String(cString: rg_libbpf_log()).split(separator: "\n").suffix(3).joined(separator: " | ")
            if !l.isEmpty { d += " (libbpf: \(l))" }
        }
        description = d
    }
    init(message: String) { description = message }
}

/// The XDP path's programs and maps, loaded from the object embedded in the binary
/// (bpf/reflectguard.bpf.c, built by scripts/embed-bpf.sh).
///
/// Loading needs CAP_BPF/CAP_SYS_ADMIN and happens before the agent drops its privileges; the map
/// writes and reads afterwards work on the descriptors held here.
public final class BPFPrograms: Sendable {
    /// The programs' names in the kernel (`bpftool prog`, `ip link`), by which a restarted agent
    /// recognises its own attachments (the kernel keeps 15 characters).
    public enum Program: String, CaseIterable, Sendable {
        case synRecord = "rg_syn_record"
        case synRecordTC = "rg_syn_record_tc"
        case synackCheck = "rg_synack_check"
    }

    /// Counter slots (rg_bpf_maps.h `enum rg_counter`) with the reason tokens the agent and the
    /// nft path count under.
    public enum Counter: Int, CaseIterable, Sendable {
        case synRecorded = 0, synackSolicited, synackUnsolicited, allowlisted, notArmed, unparsed
        public var reason: String {
            switch self {
            case .synRecorded: return "syn-tracked"
            case .synackSolicited: return "solicited-synack"
            case .synackUnsolicited: return "unsolicited-synack"
            case .allowlisted: return "allowlisted"
            case .notArmed: return "not-armed"
            case .unparsed: return "not-parsed"
            }
        }
        /// Whether the program dropped the packets this slot counts.
        public var dropped: Bool { self == .synackUnsolicited }
    }

    /// libbpf's object; nil once closed. Behind a lock: the enforcement queue, the XDP path's
    /// timer and the metrics thread all look maps up in it, and `close` must not free it under a
    /// lookup (each use is a name lookup and a descriptor; the map operations themselves are
    /// bpf(2) calls on those descriptors, outside the lock).
    private let object: Mutex<OpaquePointer?>

    /// Sizes and horizons the program needs, from the same defines as the nft pending set and
    /// the engine.
    public struct Configuration: Sendable {
        public var pendingCapacity: Int = 1_048_576
        public var synackHorizon: Double = 63
        public var establishedHorizon: Double = 3600
        public init() {}
    }

    public init(_ configuration: Configuration) throws(BPFError) {
        rg_libbpf_capture()
        guard let o = rg_open_embedded() else { throw BPFError("opening the embedded BPF object", errno) }
        do throws(BPFError) {
            for name in ["rg_pending4", "rg_pending6"] {
                let r = bpf_map__set_max_entries(try Self.map(o, name), UInt32(clamping: configuration.pendingCapacity))
                if r != 0 { throw BPFError("sizing \(name)", r) }
            }
            let r = bpf_object__load(o)
            if r != 0 { throw BPFError("loading the BPF programs", r) }
            var cfg = rg_config(synack_horizon_ns: UInt64(configuration.synackHorizon * 1e9),
                                established_horizon_ns: UInt64(configuration.establishedHorizon * 1e9))
            var zero: UInt32 = 0
            try Self.check(bpf_map_update_elem(bpf_map__fd(try Self.map(o, "rg_config")), &zero, &cfg, UInt64(BPF_ANY)),
                           "writing rg_config")
        } catch {
            bpf_object__close(o)
            throw error
        }
        object = Mutex(o)
    }

    deinit { close() }

    /// Closes the object's descriptors. Attached programs stay attached (the interface holds
    /// them) until detached.
    public func close() {
        object.withLock { o in
            if let o { bpf_object__close(o) }
            o = nil
        }
    }

    public func programFD(_ p: Program) throws(BPFError) -> Int32 {
        try object.withLock { o throws(BPFError) -> Int32 in
            guard let o else { throw Self.closedError }
            guard let prog = bpf_object__find_program_by_name(o, p.rawValue) else {
                throw BPFError(message: "the embedded BPF object has no program \(p.rawValue)")
            }
            return bpf_program__fd(prog)
        }
    }

    private static let closedError = BPFError(message: "the BPF programs are closed")

    private static func map(_ o: OpaquePointer, _ name: String) throws(BPFError) -> OpaquePointer {
        guard let m = bpf_object__find_map_by_name(o, name) else {
            throw BPFError(message: "the embedded BPF object has no map \(name)")
        }
        return m
    }

    func mapFD(_ name: String) throws(BPFError) -> Int32 {
        try object.withLock { o throws(BPFError) -> Int32 in
            guard let o else { throw Self.closedError }
            return bpf_map__fd(try Self.map(o, name))
        }
    }

    private static func check(_ r: Int32, _ step: String) throws(BPFError) {
        if r != 0 { throw BPFError(step, r < 0 && r != -1 ? r : errno, log: false) }
    }

    // MARK: tries

    /// Writes `prefix` into one of the LPM tries (`protected`, `allow`, `armed`) with `value`.
    private func put(_ trie: String, _ prefix: CIDR, value: UnsafeRawPointer) throws(BPFError) {
        let b = prefix.address.bytes
        if prefix.isIPv4 {
            var k = rg_lpm4_key(prefixlen: UInt32(prefix.length) - 96, addr: 0)
            withUnsafeMutableBytes(of: &k.addr) { p in for i in 0..<4 { p[i] = b[12 + i] } }
            try Self.check(bpf_map_update_elem(try mapFD(trie + "4"), &k, value, UInt64(BPF_ANY)), "writing \(prefix) into \(trie)4")
        } else {
            var k = rg_lpm6_key()
            k.prefixlen = UInt32(prefix.length)
            withUnsafeMutableBytes(of: &k.addr) { p in for i in 0..<16 { p[i] = b[i] } }
            try Self.check(bpf_map_update_elem(try mapFD(trie + "6"), &k, value, UInt64(BPF_ANY)), "writing \(prefix) into \(trie)6")
        }
    }

    /// Replaces the contents of the `protected` or `allow` trie with `prefixes`.
    public func setPrefixes(_ trie: String, _ prefixes: [CIDR]) throws(BPFError) {
        for family in ["4", "6"] {
            let fd = try mapFD("rg_" + trie + family)
            // Deleting while iterating restarts from the first key each time: the tries are small.
            var key = [UInt8](repeating: 0, count: family == "4" ? 8 : 20)
            while bpf_map_get_next_key(fd, nil, &key) == 0 { _ = bpf_map_delete_elem(fd, &key) }
        }
        var one: UInt8 = 1
        for p in prefixes { try put("rg_" + trie, p, value: &one) }
    }

    /// Arms `prefix` until `timeout` seconds from now: the program drops for it until then, so a
    /// prefix nobody renews disarms by itself.
    public func arm(_ prefix: CIDR, timeout: Double) throws(BPFError) {
        var v = rg_armed_value(expires_ns: UInt64(Self.monotonicNanoseconds()) &+ UInt64(timeout * 1e9))
        try put("rg_armed", prefix, value: &v)
    }

    /// The armed prefixes with their remaining seconds (expired ones included, negative).
    public func armedPrefixes() throws(BPFError) -> [(prefix: String, remaining: Double)] {
        let now = Double(Self.monotonicNanoseconds())
        var out: [(String, Double)] = []
        for family in [4, 6] {
            let fd = try mapFD("rg_armed\(family)")
            var key = [UInt8](repeating: 0, count: family == 4 ? 8 : 20)
            var prev: [UInt8]? = nil
            while (prev == nil ? bpf_map_get_next_key(fd, nil, &key) : bpf_map_get_next_key(fd, prev!, &key)) == 0 {
                var v = rg_armed_value()
                if bpf_map_lookup_elem(fd, key, &v) == 0 {
                    let len = Int(key[0]) | Int(key[1]) << 8
                    let addr = key[4...]
                    let text = family == 4 ? addr.map(String.init).joined(separator: ".")
                        : stride(from: 0, to: 16, by: 2).map { String(UInt16(addr[addr.startIndex + $0]) << 8 | UInt16(addr[addr.startIndex + $0 + 1]), radix: 16) }.joined(separator: ":")
                    out.append(("\(text)/\(len)", (Double(v.expires_ns) - now) / 1e9))
                }
                prev = key
            }
        }
        return out
    }

    // MARK: counters

    /// Each counter summed over the CPUs.
    public func counters() throws(BPFError) -> [Counter: UInt64] {
        let fd = try mapFD("rg_counters")
        let cpus = max(1, Int(libbpf_num_possible_cpus()))
        var values = [UInt64](repeating: 0, count: cpus)
        var out: [Counter: UInt64] = [:]
        for c in Counter.allCases {
            var k = UInt32(c.rawValue)
            try Self.check(bpf_map_lookup_elem(fd, &k, &values), "reading rg_counters")
            out[c] = values.reduce(0, &+)
        }
        return out
    }

    // MARK: test runs

    /// The program's verdict on one Ethernet frame (BPF_PROG_TEST_RUN): XDP_DROP is 1, XDP_PASS 2.
    public func testRun(_ p: Program, frame: [UInt8]) throws(BPFError) -> UInt32 {
        var ret: UInt32 = 0
        let fd = try programFD(p)
        let r = frame.withUnsafeBytes { rg_test_run(fd, $0.baseAddress, UInt32($0.count), &ret) }
        if r != 0 { throw BPFError("BPF_PROG_TEST_RUN of \(p.rawValue)", r < 0 && r != -1 ? r : errno, log: false) }
        return ret
    }

    public static let xdpDrop: UInt32 = 1
    public static let xdpPass: UInt32 = 2

    /// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
    static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

extension BPFPrograms {
    /// Pins each map and program under `dir` by its name.
    func pinAll(_ dir: String) throws(BPFError) {
        try object.withLock { o throws(BPFError) in
            guard let o else { throw Self.closedError }
            var r = bpf_object__pin_maps(o, dir)
            if r != 0 { throw BPFError("pinning maps in \(dir)", r) }
            for p in Program.allCases {
                guard let prog = bpf_object__find_program_by_name(o, p.rawValue) else { continue }
                r = bpf_program__pin(prog, "\(dir)/\(p.rawValue)")
                if r != 0 { throw BPFError("pinning \(p.rawValue) in \(dir)", r) }
            }
        }
    }
}
