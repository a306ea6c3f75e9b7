// `scripts/fuzz.sh reasons DIR`: runs every input of DIR once through the fuzz checks and prints
// how many decisions of each reason they produced, to show which engine paths a corpus reaches
// (coverage counts edges; this says which verdicts). Built like the fuzzer, with its own entry.
#if canImport(Glibc)
import Glibc
#endif
import VerdictEngine

nonisolated(unsafe) var tally: [Reason: Int] = [:]
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var failed = 0

@_cdecl("LLVMFuzzerTestOneInput")
public func tallyOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    inputs += 1
    let input = UnsafeRawBufferPointer(start: start, count: start == nil ? 0 : count)
    if !FuzzInvariants.check(input, observe: { tally[$0.reason, default: 0] += 1 }).isEmpty { failed += 1 }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func tallyInitialize(_ argc: UnsafeMutablePointer<CInt>?,
                            _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    // libFuzzer exits through exit(), so the table is printed from an atexit handler.
    atexit {
        let reached = Reason.allCases.filter { tally[$0, default: 0] > 0 }.count
        print("inputs: \(inputs), failing invariants: \(failed), reasons reached: \(reached)/\(Reason.allCases.count)")
        for r in Reason.allCases { print("  \(r.token.padding(toLength: 24)) \(tally[r, default: 0])") }
    }
    return 0
}

extension String {
    func padding(toLength n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
