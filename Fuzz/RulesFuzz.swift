// libFuzzer entry for the rules scanner and resolver (RulesConfig.resolve, render). Built by
// `scripts/fuzz.sh rules` with `swiftc -sanitize=fuzzer,address` over the PacketParser,
// VerdictEngine and Rules sources; the checks live in
// Tests/FuzzRegressionTests/RulesFuzzInvariants.swift, compiled into both this target and the
// regression test that replays Fuzz/corpus-rules.
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: start == nil ? 0 : count)
    let failures = RulesFuzzInvariants.check(input)
    if !failures.isEmpty {
        // abort() makes libFuzzer save the input as a crash-* reproducer.
        for f in failures.prefix(8) { print("INVARIANT FAILED: \(f)") }
        abort()
    }
    return 0
}
