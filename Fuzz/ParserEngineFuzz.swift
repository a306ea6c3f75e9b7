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
    fuzzInput(start, count) { FuzzInvariants.check($0) }
}
