/// How long the probe chains of an open-addressing index are: for each stored key, the slots a
/// lookup of it reads (1 when it sits in its home slot). With keys hashed under a secret seed the
/// mean stays near 1.5 at half load and the longest grows like log n; keys aimed at one home slot
/// make both grow with their number, and every lookup or insertion that lands there pays it.
public struct ProbeStatistics: Sendable, Equatable {
    /// Keys stored.
    public var entries = 0
    /// The longest probe of any stored key, in slots read.
    public var longest = 0
    /// Slots read by looking every stored key up once.
    public var total = 0

    public init() {}

    /// Slots read per stored key, on average (0 when empty).
    public var mean: Double { entries == 0 ? 0 : Double(total) / Double(entries) }

    mutating func add(probes: Int) {
        entries += 1
        total += probes
        if probes > longest { longest = probes }
    }
}
