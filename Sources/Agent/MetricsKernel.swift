/// One named counter of the agent's nft table, as `RulesHooks.kernelCounters` hands it to the
/// metrics: what the kernel itself decided for `family`'s packets, for `reason` (a `--verdicts`
/// token where it means the same), without the agent seeing them.
public struct KernelCount: Sendable, Equatable {
    public var verdict: String
    public var reason: String
    public var family: String
    public var packets: UInt64
    public var bytes: UInt64

    public init(verdict: String, reason: String, family: String, packets: UInt64, bytes: UInt64) {
        self.verdict = verdict
        self.reason = reason
        self.family = family
        self.packets = packets
        self.bytes = bytes
    }
}

extension MetricsRegistry {
    /// The kernel's own drops and accepts (the table's named counters), read once per scrape:
    /// one netlink dump, whatever the sets hold (a whole scrape costs ~0.5 ms of CPU, BENCHMARKS.md).
    /// Families with no sample are still declared, so a dashboard's query finds them before the
    /// first attack.
    func renderKernel() -> String {
        var out = ""
        // A failed read shows the last totals read: the counts happened, and a series that
        // vanishes for a scrape reads as a reset in rate().
        let counts: [KernelCount]
        do {
            let fresh = try kernelCounters()
            lastKernelCounts.withLock { $0 = fresh }
            counts = fresh
        } catch {
            kernelReadFailures.add(0)
            counts = lastKernelCounts.withLock { $0 }
        }
        func labelled(_ name: String, _ help: String, verdict: String, _ value: (KernelCount) -> UInt64) {
            out += Self.family(name, "counter", help)
            for c in counts where c.verdict == verdict {
                out += "\(name){family=\"\(c.family)\",reason=\"\(c.reason)\"} \(value(c))\n"
            }
        }
        labelled("reflectguard_kernel_drops_total",
                 "Packets the agent's nft table dropped in the kernel (armed victims, kernel_enforce = always, RST meters, fragments), by family and reason.",
                 verdict: "drop") { $0.packets }
        labelled("reflectguard_kernel_dropped_bytes_total", "Bytes of the packets counted in reflectguard_kernel_drops_total.",
                 verdict: "drop") { $0.bytes }
        labelled("reflectguard_kernel_accepts_total",
                 "Packets the kernel check accepted for armed victims before the queue (SYN-ACKs answering a recorded SYN), by family and reason.",
                 verdict: "accept") { $0.packets }
        out += Self.family("reflectguard_kernel_read_failures_total", "counter",
                           "Scrapes at which the table's counters could not be read (that scrape shows the last totals read).")
        out += "reflectguard_kernel_read_failures_total \(kernelReadFailures.value(0))\n"
        return out
    }
}
