// libFuzzer entry for the file readers `score` runs on what it is given: CaptureReader (pcap through
// libpcap and the direct plain-pcap reader, pcapng through our own reader, compressed files through
// the decompressors) and the `--labels` reader. Built by
// scripts/fuzz-captures.sh with `swiftc -sanitize=fuzzer,address` over the Captures, Scoring and
// PacketParser sources (libpcap itself is the system's, uninstrumented); the checks live in
// Tests/FuzzRegressionTests/CaptureFuzzInvariants.swift, compiled into both this target and the
// regression test that replays Fuzz/corpus-captures.
#if canImport(Glibc)
import Glibc
#endif

/// One scratch file per process, rewritten for every input: libpcap reads files, not memory.
let scratch = "/dev/shm/rg-capture-fuzz-\(getpid()).bin"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    fuzzInput(start, count) { CaptureFuzzInvariants.check($0, scratch: scratch) }
}
