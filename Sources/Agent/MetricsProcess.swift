#if canImport(Glibc)
import Glibc
#endif

/// The process's own figures under the names every Prometheus client library exports
/// (client_golang's process collector: the same names, units and types), read from /proc at
/// scrape time.
struct ProcessFigures: Equatable {
    var cpuSeconds: Double
    var residentBytes: UInt64
    var virtualBytes: UInt64
    var startTimeSeconds: Double
    var openFDs: Int
    var maxFDs: UInt64

    /// nil when /proc cannot be read (no procfs mounted).
    static func read() -> ProcessFigures? {
        guard let stat = ProcFiles.read("/proc/self/stat"), let btime = bootTime() else { return nil }
        return parse(stat: stat, bootTime: btime, ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))),
                     pageSize: UInt64(sysconf(Int32(_SC_PAGESIZE))), openFDs: countOpenFDs(), maxFDs: maxFDs())
    }

    /// `/proc/self/stat` (proc(5)): the command name in parentheses may hold spaces and ')', so
    /// fields are counted from the last ')'. Field 3 (state) comes first after it.
    static func parse(stat: String, bootTime: Double, ticksPerSecond: Double, pageSize: UInt64,
                      openFDs: Int, maxFDs: UInt64) -> ProcessFigures? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        func field(_ n: Int) -> UInt64? { n - 3 < fields.count ? UInt64(fields[n - 3]) : nil }
        guard ticksPerSecond > 0, let utime = field(14), let stime = field(15), let start = field(22),
              let vsize = field(23), let rss = field(24) else { return nil }
        return ProcessFigures(cpuSeconds: Double(utime + stime) / ticksPerSecond, residentBytes: rss * pageSize,
                              virtualBytes: vsize, startTimeSeconds: bootTime + Double(start) / ticksPerSecond,
                              openFDs: openFDs, maxFDs: maxFDs)
    }

    /// `btime` of /proc/stat: the boot time in seconds since the epoch.
    private static func bootTime() -> Double? {
        ProcFiles.number(in: "/proc/stat", after: "btime ").map(Double.init)
    }

    /// The directory's own descriptor is listed while it is open.
    private static func countOpenFDs() -> Int { max(0, (ProcFiles.entryCount("/proc/self/fd") ?? 0) - 1) }

    private static func maxFDs() -> UInt64 {
        var l = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l) == 0 else { return 0 }
        return UInt64(l.rlim_cur)
    }
}

extension MetricsRegistry {
    /// Build, process and reload figures.
    func renderLifecycle() -> String {
        var out = Self.family("reflectguard_build_info", "gauge", "Always 1; the labels say which build runs.")
        out += "reflectguard_build_info{version=\"\(Self.escapeLabel(version))\"} 1\n"
        if let p = ProcessFigures.read() {
            out += Self.single("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpuSeconds)
            out += Self.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.residentBytes)
            out += Self.single("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtualBytes)
            out += Self.single("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p.startTimeSeconds)
            out += Self.single("process_open_fds", "gauge", "Number of open file descriptors.", p.openFDs)
            out += Self.single("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.maxFDs)
        }
        out += Self.single("reflectguard_reloads_total", "counter", "Rules reloads asked for (SIGHUP), taken or refused.",
                           reloads.attempts.load(ordering: .relaxed))
        out += Self.single("reflectguard_reload_failures_total", "counter", "Rules reloads refused (the previous rules and policy stayed).",
                           reloads.failures.load(ordering: .relaxed))
        out += Self.single("reflectguard_last_reload_successful", "gauge", "1 when the last reload took (or none was asked for), 0 when it was refused.",
                           reloads.lastSucceeded.load(ordering: .relaxed) ? 1 : 0)
        out += Self.single("reflectguard_last_reload_success_timestamp_seconds", "gauge",
                           "When the rules last loaded (the start, or the last reload that took), in seconds since the epoch.",
                           Double(reloads.lastSuccessMilliseconds.load(ordering: .relaxed)) / 1000)
        return out
    }

    /// A family of one unlabelled sample.
    static func single(_ name: String, _ type: String, _ help: String, _ value: some CustomStringConvertible) -> String {
        family(name, type, help) + "\(name) \(value)\n"
    }

    /// Prometheus text format: a label value escapes backslash, double quote and newline.
    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
