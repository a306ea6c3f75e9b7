// libFuzzer entry for the ctnetlink message reader (ConntrackMessage) and the engine's mirror of
// conntrack facts. Built by `scripts/fuzz.sh conntrack` with `swiftc -sanitize=fuzzer,address` over
// the PacketParser and VerdictEngine sources and Sources/Conntrack/ConntrackMessage.swift (the
// socket beside it needs libmnl, the reader nothing); the checks live in
// Tests/FuzzRegressionTests/ConntrackFuzzInvariants.swift, compiled into both this target and the
// regression test that replays Fuzz/corpus-conntrack.
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    fuzzInput(start, count) { ConntrackFuzzInvariants.check($0) }
}
