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
    fputs("Error: unknown benchmark '\(which)'\nUsage: reflectguard-bench \(names)\n", stderr)
    exit(2)
}
