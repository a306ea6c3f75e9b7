/// Benchmarks, one per stage, chosen by the first argument; `scripts/bench.sh` builds the release
/// binary and calls this. Only release builds give meaningful figures.
#if canImport(Glibc)
import Glibc
#endif

let benches: [(name: String, run: () -> Void)] = [
    ("parser", ParserBench.run),
    ("engine", EngineBench.run),
    ("memory", MemoryBench.run),
]

let which = CommandLine.arguments.dropFirst().first ?? "all"
if which == "all" {
    for b in benches { b.run() }
} else if let b = benches.first(where: { $0.name == which }) {
    b.run()
} else {
    let names = (benches.map(\.name) + ["all"]).joined(separator: "|")
    // Straight to fd 2: glibc's `stderr` is a mutable C global, which Swift 6 will not share.
    let message = "Error: unknown benchmark '\(which)'\nUsage: reflectguard-bench \(names)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
