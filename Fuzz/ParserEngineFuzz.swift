// libFuzzer entry for the parser and the verdict engine. Built by scripts/fuzz.sh with
// `swiftc -sanitize=fuzzer,address` over the PacketParser and VerdictEngine sources (the package's
// `swift build` does not take -sanitize=fuzzer); the checks themselves live in
// Tests/FuzzRegressionTests/FuzzInvariants.swift, compiled into both this target and the
// regression test that replays Fuzz/corpus, so the two can never check different things.
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: start == nil ? 0 : count)
    let failures = FuzzInvariants.check(input)
    if !failures.isEmpty {
        // abort() makes libFuzzer save the input as a crash-* reproducer.
        for f in failures.prefix(8) { print("INVARIANT FAILED: \(f)") }
        abort()
    }
    return 0
}
