import CProcessControl
#if canImport(Glibc)
import Glibc
#endif

/// The process's Linux capabilities (capabilities(7)), read and narrowed.
///
/// Once the agent is set up (queues bound, metrics socket bound, rules applied) it needs one
/// capability for the rest of its life: CAP_NET_ADMIN, for arming victims and reloading or
/// removing its rules through libnftables and iptables-nft. Run as root it would otherwise keep
/// all of them, and a child it starts as uid 0 would get them all back at execve (root's file
/// capabilities count as full), so the bounding set goes too: it caps what any execve can give.
public enum Capabilities {
    public static let netAdmin = 12
    static let setpcap = 8

    /// Whether `capability` is in the calling thread's effective set.
    public static func effective(_ capability: Int) -> Bool {
        guard let s = read() else { return false }
        return s.effective & (1 << UInt64(capability)) != 0
    }

    /// Keeps only `keep` in every set of the process, bounding and ambient included, and sets
    /// no_new_privs. Must run while the process has one thread: capabilities belong to threads,
    /// and each thread started later inherits its creator's. Returns what could not be done.
    public static func restrict(to keep: Set<Int>) -> [String] {
        var problems: [String] = []
        let threads = threadCount()
        if threads != 1 { problems.append("\(threads) threads: the others keep their capabilities") }
        let last = lastCapability()
        // The bounding set first: dropping from it takes CAP_SETPCAP, which goes right after.
        var kept: [Int] = []
        var why: Int32 = 0
        for c in 0...last where !keep.contains(c) && rg_prctl(PR_CAPBSET_READ, UInt(c), 0) == 1 {
            if rg_prctl(PR_CAPBSET_DROP, UInt(c), 0) != 0 { kept.append(c); why = errno }
        }
        if !kept.isEmpty {
            // Without CAP_SETPCAP (an unprivileged agent whose launcher did not narrow the set).
            problems.append("bounding set keeps capabilities \(kept.map(String.init).joined(separator: ",")): \(String(cString: strerror(why)))")
        }
        // Ambient capabilities survive execve for non-root children; keep only ours there.
        for c in 0...last where !keep.contains(c) {
            _ = rg_prctl(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_LOWER), UInt(c))
        }
        let mask = keep.reduce(UInt64(0)) { $0 | 1 << UInt64($1) }
        if var s = read() {
            s.permitted &= mask
            s.effective &= mask
            s.inheritable &= mask
            if !write(s) { problems.append("capset: \(String(cString: strerror(errno)))") }
        } else {
            problems.append("capget: \(String(cString: strerror(errno)))")
        }
        // No execve can raise privileges again (set-user-ID binaries, file capabilities).
        if rg_prctl(PR_SET_NO_NEW_PRIVS, 1, 0) != 0 { problems.append("no_new_privs: \(String(cString: strerror(errno)))") }
        return problems
    }

    struct Sets {
        var effective: UInt64
        var permitted: UInt64
        var inheritable: UInt64
    }

    static func read() -> Sets? {
        var raw = rg_cap_sets()
        guard rg_capget(&raw) == 0 else { return nil }
        let (lo, hi) = raw.words
        return Sets(effective: UInt64(lo.effective) | UInt64(hi.effective) << 32,
                    permitted: UInt64(lo.permitted) | UInt64(hi.permitted) << 32,
                    inheritable: UInt64(lo.inheritable) | UInt64(hi.inheritable) << 32)
    }

    static func write(_ s: Sets) -> Bool {
        var raw = rg_cap_sets()
        raw.words.0 = __user_cap_data_struct(effective: UInt32(truncatingIfNeeded: s.effective),
                                             permitted: UInt32(truncatingIfNeeded: s.permitted),
                                             inheritable: UInt32(truncatingIfNeeded: s.inheritable))
        raw.words.1 = __user_cap_data_struct(effective: UInt32(truncatingIfNeeded: s.effective >> 32),
                                             permitted: UInt32(truncatingIfNeeded: s.permitted >> 32),
                                             inheritable: UInt32(truncatingIfNeeded: s.inheritable >> 32))
        return rg_capset(&raw) == 0
    }

    /// The highest capability this kernel knows (40 on 6.x); 63 when it cannot be read, which
    /// only costs a few prctl calls that fail with EINVAL.
    static func lastCapability() -> Int {
        guard let n = ProcFiles.number(in: "/proc/sys/kernel/cap_last_cap"), n > 0, n < 64 else { return 63 }
        return Int(n)
    }

    static func threadCount() -> Int { ProcFiles.entryCount("/proc/self/task") ?? 1 }
}
