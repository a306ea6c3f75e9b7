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
    fuzzInput(start, count) { RulesFuzzInvariants.check($0) }
}
