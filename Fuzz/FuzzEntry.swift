// What every libFuzzer target here does with one input: run its invariant checks on the bytes
// and abort on the first failure, which makes libFuzzer save the input as a crash-* reproducer.
// Compiled into each fuzz target beside its entry file (scripts/fuzz.sh, scripts/fuzz-captures.sh).
#if canImport(Glibc)
import Glibc
#endif

func fuzzInput(_ start: UnsafeRawPointer?, _ count: Int, _ check: (UnsafeRawBufferPointer) -> [String]) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: start == nil ? 0 : count)
    let failures = check(input)
    if !failures.isEmpty {
        for f in failures.prefix(8) { print("INVARIANT FAILED: \(f)") }
        fflush(stdout)
        abort()
    }
    return 0
}
