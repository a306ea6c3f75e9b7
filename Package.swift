// swift-tools-version:6.0
// ReflectGuard: NFQUEUE inline mitigation of SYN-ACK reflection and RST floods.
//
// The packet path reads from the targets: NFQueue (receive, send verdicts) → PacketParser →
// VerdictEngine (decide), with Captures and Rules beside it. The C libraries live only in the
// thin I/O targets (NFQueue, Conntrack, Captures, NftBackend); PacketParser, VerdictEngine, Rules, Scoring and
// Lab are pure Swift (Scoring adds CPrefetch, one inline prefetch instruction from a header; Rules
// and Scoring read and write files through SystemCalls, pure Swift over Glibc), so fuzzing,
// sanitizers and benchmarks build them on their own.
import PackageDescription

let package = Package(
    name: "ReflectGuard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "reflectguard", targets: ["reflectguard"]),
    ],
    targets: [
        // MARK: C boundary (system libraries from Debian's packages)
        .systemLibrary(
            name: "CNetfilterQueue", pkgConfig: "libnetfilter_queue",
            providers: [.apt(["libnetfilter-queue-dev", "libmnl-dev"])]),
        .systemLibrary(
            name: "CPcap", pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]),
        .systemLibrary(
            name: "CNftables", pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]),
        // Compressed captures, decompressed as streams: gzip, zstd, xz.
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CLzma", pkgConfig: "liblzma",
            providers: [.apt(["liblzma-dev"])]),
        // libbpf, and the XDP path's BPF object embedded as bytes (scripts/embed-bpf.sh builds it
        // from Sources/CBPF/reflectguard.bpf.c with clang -target bpf; `swift build` itself needs no BPF tooling).
        .systemLibrary(
            name: "CBPF", pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev"])]),

        .systemLibrary(
            name: "CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),
        // ctnetlink (the kernel's conntrack table) through libmnl.
        .systemLibrary(
            name: "CConntrack", pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]),

        // A header-only module: one software prefetch instruction, for the scoring tables.
        .systemLibrary(name: "CPrefetch"),
        // Header-only too: prctl and capget/capset, for the agent's privilege drop.
        .systemLibrary(name: "CProcessControl"),

        // MARK: pure Swift
        .target(name: "PacketParser"),
        .target(name: "VerdictEngine", dependencies: ["PacketParser"]),
        .target(name: "Rules", dependencies: ["VerdictEngine", "SystemCalls"]),
        .target(name: "Scoring", dependencies: ["PacketParser", "VerdictEngine", "CPrefetch", "SystemCalls"]),
        .target(name: "Lab", dependencies: ["PacketParser"]),

        // MARK: thin I/O
        // The one wrapper under every system call (EINTR, EAGAIN, typed errors) and its test seam:
        // pure Swift over Glibc. Debug builds let a test's SystemCallMock answer for the kernel.
        .target(name: "SystemCalls", swiftSettings: [.define("ENABLE_MOCKING", .when(configuration: .debug))]),
        .target(name: "Captures", dependencies: ["CPcap", "CZlib", "CZstd", "CLzma", "PacketParser", "SystemCalls"]),
        // NFQueue for its NETLINK_NETFILTER socket opener, which Conntrack shares too.
        .target(name: "NftBackend", dependencies: ["CNftables", "CProcessControl", "Rules", "VerdictEngine", "SystemCalls", "NFQueue"]),
        .target(name: "NFQueue", dependencies: ["CNetfilterQueue", "SystemCalls"]),
        // BGP Flowspec escalation: the policy (pure) and the gobgpd driver (its child process).
        .target(name: "Flowspec", dependencies: ["PacketParser", "VerdictEngine", "Rules", "CProcessControl", "SystemCalls"]),
        // Reads conntrack entries (dump and events) and hands them on as the engine's facts.
        .target(name: "Conntrack", dependencies: ["CConntrack", "NFQueue", "VerdictEngine", "PacketParser"]),
        .target(name: "XDPPath", dependencies: ["CBPF", "VerdictEngine"]),

        // MARK: wiring
        .target(name: "Agent", dependencies: ["NFQueue", "Conntrack", "PacketParser", "VerdictEngine", "Rules",
                                              "NftBackend", "Scoring", "CProcessControl", "XDPPath", "Flowspec", "CSystemd", "SystemCalls"]),
        .executableTarget(name: "reflectguard", dependencies: [
            "Agent", "Conntrack", "Captures", "Lab", "NftBackend", "Rules", "Scoring", "VerdictEngine", "PacketParser", "XDPPath", "Flowspec", "SystemCalls",
        ]),
        .executableTarget(name: "reflectguard-bench", dependencies: [
            "PacketParser", "VerdictEngine", "Lab",
        ]),

        // MARK: tests
        // What the test targets share: the test environment (directories, binary, tools, skips) and
        // the package's seeded generator. Foundation, Testing and PacketParser (for the generator).
        .target(name: "TestSupport", dependencies: ["PacketParser"], path: "Tests/TestSupport"),
        .testTarget(name: "PacketParserTests", dependencies: ["PacketParser", "Lab", "Captures", "TestSupport"]),
        .testTarget(name: "VerdictEngineTests", dependencies: ["VerdictEngine", "PacketParser", "Lab", "TestSupport"]),
        .testTarget(name: "RulesTests", dependencies: ["Rules", "NftBackend", "VerdictEngine", "PacketParser", "TestSupport"]),
        .testTarget(name: "CapturesTests", dependencies: ["Captures", "PacketParser", "Lab", "TestSupport"]),
        .testTarget(name: "ScoringTests", dependencies: ["Scoring", "Captures", "Lab", "VerdictEngine", "PacketParser",
                                                         "TestSupport"]),
        .testTarget(name: "IntegrationTests", dependencies: ["PacketParser", "Lab", "NFQueue", "TestSupport", "XDPPath",
                                                            "VerdictEngine"]),
        .testTarget(name: "FlowspecTests", dependencies: ["Flowspec", "VerdictEngine", "PacketParser", "Rules"]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "PacketParser", "TestSupport"]),
        // The agent's pieces that need no kernel queue (the metrics endpoint on loopback).
        .testTarget(name: "AgentTests", dependencies: ["Agent", "NFQueue", "Conntrack", "VerdictEngine", "PacketParser",
                                                       "TestSupport", "CNetfilterQueue", "SystemCalls", "NFQueueTestSupport", "Lab"]),
        // The queue's packet path without root: verdict batching and ordering, the netlink
        // messages against the kernel headers' layouts, the system-call wrapper. The support
        // target holds a scripted queue (messages at the C structs' layout, a model of the
        // kernel's verdict handling) that AgentTests drives a worker with.
        .target(name: "NFQueueTestSupport", dependencies: ["NFQueue", "CNetfilterQueue"], path: "Tests/NFQueueTestSupport"),
        .testTarget(name: "NFQueueTests", dependencies: ["NFQueue", "CNetfilterQueue", "SystemCalls", "NFQueueTestSupport", "TestSupport"]),
        // The BPF programs against the engine's verdicts (BPF_PROG_TEST_RUN), and the XDP lab.
        .testTarget(name: "XDPPathTests", dependencies: ["XDPPath", "VerdictEngine", "PacketParser", "Lab", "TestSupport"]),
        // Replays Fuzz/corpus, Fuzz/corpus-captures, Fuzz/corpus-rules and Fuzz/corpus-conntrack
        // through the fuzz targets' checks (scripts/fuzz.sh and scripts/fuzz-captures.sh build the fuzzers).
        .testTarget(name: "FuzzRegressionTests", dependencies: ["PacketParser", "VerdictEngine", "Captures", "Scoring",
                                                                "Rules", "Conntrack"]),
    ],
    // Swift 6 language mode everywhere: strict concurrency checking across the agent's threads
    // (workers, metrics, control, timers); the few `@unchecked Sendable` left each carry their proof.
    swiftLanguageModes: [.v6]
)
