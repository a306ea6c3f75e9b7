#if canImport(Glibc)
import Glibc
#endif
import VerdictEngine

/// Whether the engines' flow tables fit, checked before anything changes in the kernel: one
/// table per queue, every page backed at start (prefault). Tables larger than the memory there
/// is would have the agent paged out or OOM-killed with its rules in place; tables the address
/// space (RLIMIT_AS) or the kernel's overcommit accounting refuse fail to map, and the
/// allocator then aborts the process, the rules again left behind.
enum TableMemory {
    static func check(_ policy: Policy, queues: Int) throws(AgentStartError) {
        let each = Engine.flowTableBytes(for: policy)
        let (total, overflow) = each.multipliedReportingOverflow(by: max(1, queues))
        func refuse(_ why: String) -> AgentStartError {
            let need = overflow || each == .max ? "more than this machine can address"
                : "\(size(total)) (\(queues) × \(size(each)))"
            return AgentStartError(message: "syn_table_size \(policy.synTableCapacity): the flow tables need \(need)\(why); "
                                   + "lower syn_table_size or use fewer queues", exitCode: 1)
        }
        if overflow || each == .max { throw refuse("") }
        if let available = available(), total > available {
            throw refuse(", and \(size(available)) of memory is available")
        }
        // The tables' own kind of mapping, all queues at once, untouched and unmapped again:
        // what the address-space limit and strict overcommit (vm.overcommit_memory=2) would
        // refuse them, they refuse here.
        let probe = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let probe, probe != MAP_FAILED else {
            throw refuse(", which cannot be mapped: \(String(cString: strerror(errno))) (address-space or overcommit limit)")
        }
        munmap(probe, total)
    }

    /// What can be had without swapping: MemAvailable of /proc/meminfo, and less when this
    /// process's cgroup (v2: systemd's MemoryMax=) allows less.
    static func available() -> Int? {
        let system = ProcFiles.number(in: "/proc/meminfo", after: "MemAvailable:").map { Int($0) * 1024 }
        guard let group = ProcFiles.line(in: "/proc/self/cgroup", after: "0::"),
              let limit = ProcFiles.number(in: "/sys/fs/cgroup\(group)/memory.max"),
              let used = ProcFiles.number(in: "/sys/fs/cgroup\(group)/memory.current") else { return system }
        return min(system ?? .max, max(0, Int(limit) - Int(used)))
    }

    static func size(_ bytes: Int) -> String {
        let g = Double(bytes) / Double(1 << 30)
        return g >= 1 ? "\((g * 10).rounded() / 10) GiB" : "\(bytes >> 20) MiB"
    }
}
