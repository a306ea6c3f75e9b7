import Foundation
import Testing
import PacketParser
import VerdictEngine

/// Replays the committed fuzz corpus (Fuzz/corpus: inputs libFuzzer found interesting, minimised
/// with -merge=1, plus the reproducer of every bug it found) through the fuzz target's own
/// checks, so a regression shows up in the normal suite without a fuzzer build.
struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")

    /// The inputs of a corpus directory (default: this fuzzer's), in name order.
    static func inputs(in directory: URL = corpus) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test func corpusIsPresentAndSmall() throws {
        try Self.expectPresentAndSmall(Self.corpus, maxFiles: 200, maxLength: 512)
    }

    /// A committed corpus has inputs (an empty one means a broken checkout or path), not too
    /// many, and none longer than its fuzzer's -max_len.
    static func expectPresentAndSmall(_ directory: URL, maxFiles: Int, maxLength: Int,
                                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let files = try inputs(in: directory)
        #expect(files.count >= 20, "only \(files.count) inputs in \(directory.path)", sourceLocation: sourceLocation)
        #expect(files.count <= maxFiles, sourceLocation: sourceLocation)
        for f in files {
            let size = try Data(contentsOf: f).count
            #expect(size <= maxLength, "\(f.lastPathComponent) is \(size) bytes, over the fuzzer's -max_len",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func everyCorpusInputKeepsTheInvariants() throws {
        for f in try Self.inputs() {
            let data = try Data(contentsOf: f)
            let failures = data.withUnsafeBytes { FuzzInvariants.check($0) }
            #expect(failures.isEmpty, "\(f.lastPathComponent): \(failures.prefix(5).joined(separator: "; "))")
        }
    }

    /// The corpus exercises the engine, not only the parser: its replay reaches nearly every
    /// reason (all 24 when it was minimised; a few may drift as the engine changes, and the
    /// corpus is refreshed with `scripts/fuzz.sh merge`).
    @Test func corpusReachesTheEngineReasons() throws {
        var reached = Set<Reason>()
        for f in try Self.inputs() {
            let data = try Data(contentsOf: f)
            _ = data.withUnsafeBytes { FuzzInvariants.check($0, observe: { reached.insert($0.reason) }) }
        }
        // The `state = conntrack` reasons need conntrack facts, which a capture (and so the fuzz
        // input) never carries.
        let conntrackOnly: Set<Reason> = [.solicitedConntrack, .stateAwaited, .conntrackMissAccepted]
        let reachable = Reason.allCases.filter { !conntrackOnly.contains($0) }
        let missing = reachable.filter { !reached.contains($0) }.map(\.token)
        #expect(reached.count >= reachable.count - 3, "corpus never reaches \(missing)")
        #expect(reached.isSuperset(of: [.solicitedSynack, .unsolicitedSynack, .synTracked, .rstRateLimit,
                                        .backscatter, .spoofedSource, .malformed]), "missing \(missing)")
    }

    /// The checks can fail: a decision whose verdict contradicts its reason is reported.
    @Test func aContradictoryDecisionIsReported() {
        var failures: [String] = []
        FuzzInvariants.checkDecision(Decision(.drop, .synTracked), packet: ParsedPacket(), queued: false,
                                     observed: false, at: "t", into: &failures)
        #expect(failures.count == 1)
        failures = []
        var tcp = ParsedPacket()
        tcp.hasTCP = true
        FuzzInvariants.checkDecision(Decision(.accept, .notTCP), packet: tcp, queued: true,
                                     observed: true, at: "t", into: &failures)
        #expect(failures.count == 1, "a queued packet decided not-tcp must be reported")
    }

    /// A hand-made sequence reaches the engine's interesting paths, so the replay checks decisions
    /// beyond `not-protected`: a protected host's SYN (raw IPv4), then the peer's SYN-ACK derived
    /// from it, then an unsolicited SYN-ACK.
    @Test func handshakeRecordsReachTheEngine() {
        let syn = Self.ipv4TCP(src: [198, 18, 2, 10], dst: [203, 0, 113, 5], sport: 40000, dport: 443,
                               seq: 1000, ack: 0, flags: 0x02)
        let synack = Self.ipv4TCP(src: [203, 0, 113, 9], dst: [198, 18, 2, 10], sport: 443, dport: 40001,
                                  seq: 5, ack: 77, flags: 0x12)
        // config 3: raw IP records, symmetric, handshake tracking, time base 0.
        var input: [UInt8] = [3]
        input += [UInt8(syn.count), 0x41, 0x10] + syn          // SYN plus its derived SYN-ACK reply
        input += [UInt8(synack.count), 0x41, 0x00] + synack    // an unsolicited SYN-ACK
        let failures = input.withUnsafeBytes { FuzzInvariants.check($0) }
        #expect(failures.isEmpty, "\(failures)")

        let engine = Engine(policy: FuzzInvariants.policy(config: 3), seed: 1)
        let p1 = PacketParser.parse(syn, link: .raw)
        #expect(engine.decideObserved(p1, at: 0).reason == .synTracked)
        #expect(engine.decideObserved(FuzzInvariants.reply(to: p1), at: 1_000_000).reason == .solicitedSynack)
        #expect(engine.decideObserved(PacketParser.parse(synack, link: .raw), at: 2_000_000).reason == .unsolicitedSynack)
    }

    static func ipv4TCP(src: [UInt8], dst: [UInt8], sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32,
                        flags: UInt8) -> [UInt8] {
        var b: [UInt8] = [0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0] + src + dst
        b += [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff)]
        for v in [seq, ack] { b += [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
        b += [0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
        return b
    }
}
