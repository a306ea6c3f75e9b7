import Foundation
import PacketParser
@testable import Scoring
import Testing
import VerdictEngine
import TestSupport

/// Session end reasons and conn_states: on real captures whose endings are known (the shared
/// captures the tests read), cross-checked against tshark, and on hand-made packet sequences.
@Suite struct SessionTests {
    // MARK: real captures

    @Test func httpClientRefuseEndsOnceFromEachSide() throws {
        guard let path = TestEnvironment.capture("ppa_http_client_refuse.pcap") else {
            return TestEnvironment.unavailable("ppa_http_client_refuse.pcap not found")
        }
        let (_, records) = try scoreCapture(path)
        #expect(records.count == 2)
        let byPort = Dictionary(uniqueKeysWithValues: records.map { ($0.clientPort, $0) })
        // Stream 0 (port 1782): the client's RST at the end; stream 1 (port 1783): the server's.
        #expect(byPort[1782]?.endReason == .tcpRstFromClient)
        #expect(byPort[1782]?.connState == .RSTO)
        #expect(byPort[1782]?.history == "ShADadR")
        #expect(byPort[1783]?.endReason == .tcpRstFromServer)
        #expect(byPort[1783]?.connState == .RSTR)
        #expect(byPort[1782]?.client == IPAddress("67.161.32.69"))
        #expect(byPort[1782]?.server == IPAddress("130.57.5.25"))
    }

    @Test func nmapSynScanRejectsOpenPortsAndUnanswered() throws {
        guard let path = TestEnvironment.capture("evilfingers_nmap_syn_scan.pcap") else {
            return TestEnvironment.unavailable("evilfingers_nmap_syn_scan.pcap not found")
        }
        let (pipeline, records) = try scoreCapture(path)
        #expect(records.count == 1002)
        #expect(pipeline.sessions.connStates[.REJ] == 995)     // closed ports: responder RST
        #expect(pipeline.sessions.connStates[.RSTO] == 5)      // open ports: SYN-ACK, then nmap's RST
        #expect(pipeline.sessions.connStates[.S0] == 2)        // filtered: no answer
        #expect(pipeline.sessions.endReasons[.tcpRstFromServer] == 995)
        #expect(pipeline.sessions.endReasons[.tcpRstFromClient] == 5)
        for r in records where r.connState == .RSTO {
            #expect(r.history == "ShR")
            #expect(r.client == IPAddress("192.168.1.10"))
        }
        for r in records where r.connState == .S0 {
            #expect(r.history == "S")
            // Alive within the handshake timeout when the 1.2 s capture ends.
            #expect(r.endReason == .open)
        }
    }

    @Test func sllCaptureFinEndingsAndRefusal() throws {
        guard let path = TestEnvironment.capture("sv_linux_sll_multi.pcap") else {
            return TestEnvironment.unavailable("sv_linux_sll_multi.pcap not found")
        }
        let (pipeline, records) = try scoreCapture(path)
        #expect(records.count == 7)
        #expect(pipeline.sessions.endReasons[.tcpFin] == 5)
        #expect(pipeline.sessions.endReasons[.tcpRstFromServer] == 1)
        #expect(pipeline.sessions.connStates[.SF] == 5)
        #expect(pipeline.sessions.connStates[.REJ] == 1)
    }

    @Test func pcapngHttpOverBothFamiliesEndsWithFin() throws {
        guard let path = TestEnvironment.capture("cs_http_ip4and6.pcapng") else {
            return TestEnvironment.unavailable("cs_http_ip4and6.pcapng not found")
        }
        let (_, records) = try scoreCapture(path)
        #expect(records.count == 2)
        for r in records {
            #expect(r.endReason == .tcpFin)
            #expect(r.connState == .SF)
            #expect(r.history == "ShADadFf")
            #expect(r.packetsToServer == 6)
            #expect(r.packetsToClient == 4)
        }
        #expect(Set(records.map { $0.server.isIPv4Mapped }) == [true, false])
    }

    /// For every stream, tshark's view of who sent the first RST (and whether any FIN was sent)
    /// must give the same end reason as ours.
    @Test(arguments: ["ppa_http_client_refuse.pcap", "evilfingers_nmap_syn_scan.pcap", "sv_linux_sll_multi.pcap",
                      "cs_http_ip4and6.pcapng", "zeek_ipv6_exthdr_http.pcap", "zeek_tcp_truncated_header.pcap"])
    func endReasonsAgreeWithTshark(_ name: String) throws {
        guard let path = TestEnvironment.capture(name) else { return TestEnvironment.unavailable("\(name) not found") }
        guard let tshark = TestEnvironment.which("tshark") else { return TestEnvironment.unavailable("tshark not installed") }
        let r = try TestEnvironment.run(tshark, [
            "-r", path, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
            "-o", "tcp.desegment_tcp_streams:FALSE", "-Y", "tcp", "-T", "fields",
            "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
            "-e", "tcp.dstport", "-e", "tcp.flags.reset", "-e", "tcp.flags.fin",
        ])
        #expect(r.status == 0, "tshark: \(r.err)")
        struct Stream { var endpoints: Set<String>; var firstRST: String?; var fin = false }
        var streams: [String: Stream] = [:]
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 9 else { continue }
            // Addresses through IPAddress so both tools print them the same way.
            let src = (IPAddress(f[1].isEmpty ? f[2] : f[1])?.description ?? "?") + "/" + f[3]
            let dst = (IPAddress(f[4].isEmpty ? f[5] : f[4])?.description ?? "?") + "/" + f[6]
            var s = streams[f[0]] ?? Stream(endpoints: [src, dst])
            if (f[7] == "1" || f[7] == "True") && s.firstRST == nil { s.firstRST = src }
            if f[8] == "1" || f[8] == "True" { s.fin = true }
            streams[f[0]] = s
        }
        let (_, records) = try scoreCapture(path)
        #expect(records.count == streams.count)
        for s in streams.values {
            let matching = records.filter { Set(["\($0.client)/\($0.clientPort)", "\($0.server)/\($0.serverPort)"]) == s.endpoints }
            #expect(matching.count == 1, "\(name): stream \(s.endpoints.sorted())")
            guard let rec = matching.first else { continue }
            if let rst = s.firstRST {
                let expected: EndReason = rst == "\(rec.client)/\(rec.clientPort)" ? .tcpRstFromClient : .tcpRstFromServer
                #expect(rec.endReason == expected, "\(name): \(s.endpoints.sorted())")
            } else if s.fin {
                #expect(rec.endReason == .tcpFin, "\(name): \(s.endpoints.sorted())")
            } else {
                #expect([EndReason.open, .agedOut, .incomplete].contains(rec.endReason), "\(name): \(s.endpoints.sorted())")
            }
        }
    }

    // MARK: hand-made sequences

    /// Runs packets (time in seconds) through a fresh table and returns the records.
    func run(_ packets: [(Double, ParsedPacket)], capacity: Int = 1024, end: Double? = nil) -> ([SessionRecord], SessionTable) {
        let t = SessionTable(capacity: capacity)
        var out: [SessionRecord] = []
        t.sink = { out.append($0) }
        for (time, p) in packets { t.observe(p, at: Nanoseconds(time * 1e9)) }
        t.finish(at: Nanoseconds((end ?? packets.last?.0 ?? 0) * 1e9))
        return (out, t)
    }

    let c = "198.18.2.2", s = "198.51.100.9"

    @Test func zeekStatesForHandshakeVariants() {
        func state(_ ps: [ParsedPacket]) -> (ConnState, EndReason, String) {
            let (r, _) = run(ps.enumerated().map { (Double($0.offset) * 0.01, $0.element) })
            return (r[0].connState, r[0].endReason, r[0].history)
        }
        let syn = tcp(c, 40000, s, 443, .syn)
        let synack = tcp(s, 443, c, 40000, [.syn, .ack])
        let ack = tcp(c, 40000, s, 443, .ack)
        let data = tcp(c, 40000, s, 443, [.ack, .psh], payload: 100)
        let finC = tcp(c, 40000, s, 443, [.fin, .ack])
        let finS = tcp(s, 443, c, 40000, [.fin, .ack])
        let rstC = tcp(c, 40000, s, 443, .rst)
        let rstS = tcp(s, 443, c, 40000, [.rst, .ack])

        #expect(state([syn]) == (.S0, .open, "S"))
        #expect(state([syn, synack, ack]) == (.S1, .open, "ShA"))
        #expect(state([syn, synack, ack, data, finC, finS, ack]) == (.SF, .tcpFin, "ShADFf"))
        #expect(state([syn, rstS]) == (.REJ, .tcpRstFromServer, "Sr"))
        #expect(state([syn, synack, ack, rstC]) == (.RSTO, .tcpRstFromClient, "ShAR"))
        #expect(state([syn, synack, ack, rstS]) == (.RSTR, .tcpRstFromServer, "ShAr"))
        #expect(state([syn, rstC]) == (.RSTOS0, .tcpRstFromClient, "SR"))
        #expect(state([syn, finC]) == (.SH, .tcpFin, "SF"))
        #expect(state([syn, synack, ack, finC]) == (.S2, .tcpFin, "ShAF"))
        #expect(state([syn, synack, ack, finS]) == (.S3, .tcpFin, "ShAf"))
        // A lone reflected SYN-ACK: its receiver is the client; no SYN seen.
        #expect(state([synack]) == (.OTH, .open, "h"))
        #expect(state([synack, rstS]) == (.RSTRH, .tcpRstFromServer, "hr"))
        #expect(state([synack, finS]) == (.SHR, .tcpFin, "hf"))
        // Midstream only: the first sender is the client.
        #expect(state([data, tcp(s, 443, c, 40000, .ack)]) == (.OTH, .open, "Da"))
    }

    @Test func synAckBeforeItsSynKeepsTheSynSenderAsClient() {
        let (r, _) = run([(0, tcp(s, 443, c, 40000, [.syn, .ack])), (0.01, tcp(c, 40000, s, 443, .syn)),
                          (0.02, tcp(c, 40000, s, 443, .ack))])
        #expect(r.count == 1)
        #expect(r[0].client == IPAddress(c))
        #expect(r[0].clientPort == 40000)
        #expect(r[0].packetsToServer == 2)
        #expect(r[0].packetsToClient == 1)
    }

    @Test func idleSessionsAgeOutByPacketTime() {
        let other = tcp("198.18.2.3", 50000, s, 80, .syn)
        let (r, t) = run([
            (0, tcp(c, 40000, s, 443, .syn)),                                   // never answered
            (1, tcp(c, 40001, s, 443, .syn)), (1.01, tcp(s, 443, c, 40001, [.syn, .ack])),
            (1.02, tcp(c, 40001, s, 443, .ack)),                                // established, then idle
            (4000, other),                                                      // moves time on
        ])
        let byPort = Dictionary(uniqueKeysWithValues: r.map { ($0.clientPort, $0) })
        #expect(byPort[40000]?.endReason == .incomplete)
        #expect(byPort[40001]?.endReason == .agedOut)
        #expect(byPort[50000]?.endReason == .open)
        #expect(t.total == 3)
        #expect(t.active == 0)
    }

    @Test func fullTableEvictsTheLeastRecentlySeen() {
        var packets: [(Double, ParsedPacket)] = []
        for i in 0..<100 {
            packets.append((Double(i) * 0.001, tcp(c, UInt16(30000 + i), s, 443, .syn)))
        }
        let (r, t) = run(packets, capacity: 10)
        #expect(t.total == 100)
        #expect(t.evicted == 90)
        #expect(r.count == 100)
        // The evicted ones are the oldest: the 10 still open at the end are the last 10.
        let open = r.filter { $0.endReason == .open }.map { Int($0.clientPort) }.sorted()
        #expect(open == Array(30090..<30100))
        #expect(r.filter { $0.endReason == .incomplete }.count == 90)
    }

    /// Thousands of concurrent sessions: the index grows (and shifts entries back on removal)
    /// while every packet must still find its own session.
    @Test func indexGrowsAndRemovesWithoutLosingSessions() {
        var packets: [(Double, ParsedPacket)] = []
        let n = 5000
        func host(_ i: Int) -> String { "198.18.\(2 + i / 250).\(1 + i % 250)" }
        for i in 0..<n { packets.append((0, tcp(host(i), UInt16(40000 + i % 7), s, 443, .syn))) }
        for i in 0..<n { packets.append((0.1, tcp(s, 443, host(i), UInt16(40000 + i % 7), [.syn, .ack]))) }
        for i in stride(from: 0, to: n, by: 2) { packets.append((0.2, tcp(s, 443, host(i), UInt16(40000 + i % 7), [.rst, .ack]))) }
        for i in 0..<n { packets.append((0.3, tcp(host(i), UInt16(40000 + i % 7), s, 443, .ack))) }
        let (r, t) = run(packets, capacity: 1 << 16)
        #expect(t.total == UInt64(n))
        #expect(r.count == n)
        #expect(r.allSatisfy { $0.packetsToServer == 2 && $0.packetsToClient == ($0.endReason == .tcpRstFromServer ? 2 : 1) })
        #expect(r.filter { $0.endReason == .tcpRstFromServer }.count == n / 2)
        #expect(r.filter { $0.connState == .S1 }.count == n / 2)
    }

    @Test func newSynAfterAnEndedSessionStartsAnother() {
        let (r, t) = run([
            (0, tcp(c, 40000, s, 443, .syn)), (0.01, tcp(s, 443, c, 40000, [.rst, .ack])),
            (1, tcp(c, 40000, s, 443, .syn)), (1.01, tcp(s, 443, c, 40000, [.syn, .ack])),
        ])
        #expect(t.total == 2)
        // SYN then SYN-ACK: the responder is not inactive, so Zeek's conn_state() says OTH.
        #expect(r.map(\.connState) == [.REJ, .OTH])
        #expect(r[0].endReason == .tcpRstFromServer)
        #expect(r[1].endReason == .open)
    }
}

@Test func endReasonAndConnStateOrdinalsAreAllCasesPositions() {
    for (i, e) in EndReason.allCases.enumerated() { #expect(e.ordinal == i) }
    for (i, c) in ConnState.allCases.enumerated() { #expect(c.ordinal == i) }
}
