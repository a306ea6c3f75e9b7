import Foundation
import Lab
import PacketParser

/// An independent little decoder for the generator's output (Ethernet with up to two tags,
/// IPv4 with options, IPv6 with extension headers, TCP). It checks the checksums itself, with a
/// plain word-by-word sum, so the tests do not trust the builder's own checksum code.
struct Decoded: Equatable {
    var time: Int64 = 0
    var vlanTags = 0
    var tpids: [UInt16] = []
    var isIPv4 = true
    var source: [UInt8] = []
    var destination: [UInt8] = []
    var ipOptionsLength = 0
    var extensionHeaders: [UInt8] = []
    var ipChecksumOK = true
    var tcpChecksumOK = false
    var ttl: UInt8 = 0
    var sourcePort: UInt16 = 0
    var destinationPort: UInt16 = 0
    var seq: UInt32 = 0
    var ack: UInt32 = 0
    var flags: UInt8 = 0
    var window: UInt16 = 0
    var tcpOptions: [UInt8] = []
    var payloadLength = 0

    var isSYN: Bool { flags & 0x12 == 0x02 }
    var isSYNACK: Bool { flags & 0x12 == 0x12 }
    var isRST: Bool { flags & 0x04 != 0 }
    var isFIN: Bool { flags & 0x01 != 0 }

    /// 198.18.2.0/24 or 2001:db8:2::/64.
    static func isProtected(_ a: [UInt8]) -> Bool {
        a.count == 4 ? a[0] == 198 && a[1] == 18 && a[2] == 2
            : Array(a[0..<8]) == [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0]
    }
    static func isReflectorRange(_ a: [UInt8]) -> Bool {
        a.count == 4 ? a[0] == 198 && a[1] == 19 : Array(a[0..<6]) == [0x20, 0x01, 0x0d, 0xb8, 0, 0xff]
    }
    var inbound: Bool { Decoded.isProtected(destination) }
    /// Client/server-independent key of the connection.
    var flowKey: [UInt8] {
        let a = source + [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff)]
        let b = destination + [UInt8(destinationPort >> 8), UInt8(destinationPort & 0xff)]
        return a.lexicographicallyPrecedes(b) ? a + b : b + a
    }
    var directedKey: [UInt8] {
        source + [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff)] + destination
            + [UInt8(destinationPort >> 8), UInt8(destinationPort & 0xff)]
    }
    var sequenceSpace: UInt32 { UInt32(payloadLength) + (flags & 0x02 != 0 ? 1 : 0) + (flags & 0x01 != 0 ? 1 : 0) }
}

enum Decoder {
    static func be16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
    static func be32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(be16(b, i)) << 16 | UInt32(be16(b, i + 2)) }

    /// RFC 1071, one 16-bit word at a time.
    static func onesComplementSum(_ bytes: ArraySlice<UInt8>, initial: UInt32 = 0) -> UInt32 {
        var sum = initial
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let hi = UInt32(bytes[i])
            let lo = i + 1 < bytes.endIndex ? UInt32(bytes[i + 1]) : 0
            sum += hi << 8 | lo
            i += 2
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return sum
    }

    /// Nil when the frame is not Ethernet/IP/TCP as the generator should write it.
    static func decode(_ f: [UInt8], ethernet: Bool = true) -> Decoded? {
        var d = Decoded()
        var off = 0
        if ethernet {
            guard f.count >= 14 else { return nil }
            off = 12
            var type = be16(f, off)
            while type == 0x8100 || type == 0x88a8 {
                d.tpids.append(type)
                d.vlanTags += 1
                off += 4
                type = be16(f, off)
            }
            off += 2
            guard type == 0x0800 || type == 0x86dd else { return nil }
        }
        guard f.count >= off + 20 else { return nil }
        let ip = off
        var proto: UInt8
        var tcp: Int
        var tcpLength: Int
        if f[ip] >> 4 == 4 {
            let ihl = Int(f[ip] & 0x0f) * 4
            guard ihl >= 20, f.count >= ip + ihl else { return nil }
            d.ipOptionsLength = ihl - 20
            d.ipChecksumOK = onesComplementSum(f[ip..<(ip + ihl)]) == 0xffff
            let total = Int(be16(f, ip + 2))
            guard f.count == ip + total else { return nil }
            d.ttl = f[ip + 8]
            proto = f[ip + 9]
            d.source = Array(f[(ip + 12)..<(ip + 16)])
            d.destination = Array(f[(ip + 16)..<(ip + 20)])
            tcp = ip + ihl
            tcpLength = total - ihl
        } else if f[ip] >> 4 == 6 {
            d.isIPv4 = false
            guard f.count >= ip + 40 else { return nil }
            let payload = Int(be16(f, ip + 4))
            guard f.count == ip + 40 + payload else { return nil }
            d.ttl = f[ip + 7]
            d.source = Array(f[(ip + 8)..<(ip + 24)])
            d.destination = Array(f[(ip + 24)..<(ip + 40)])
            proto = f[ip + 6]
            tcp = ip + 40
            while [0, 43, 44, 60].contains(proto) {
                d.extensionHeaders.append(proto)
                let len = proto == 44 ? 8 : (Int(f[tcp + 1]) + 1) * 8
                proto = f[tcp]
                tcp += len
            }
            tcpLength = ip + 40 + payload - tcp
        } else {
            return nil
        }
        guard proto == 6, tcpLength >= 20 else { return nil }
        let dataOffset = Int(f[tcp + 12] >> 4) * 4
        guard dataOffset >= 20, dataOffset <= tcpLength else { return nil }
        d.sourcePort = be16(f, tcp)
        d.destinationPort = be16(f, tcp + 2)
        d.seq = be32(f, tcp + 4)
        d.ack = be32(f, tcp + 8)
        d.flags = f[tcp + 13]
        d.window = be16(f, tcp + 14)
        d.tcpOptions = Array(f[(tcp + 20)..<(tcp + dataOffset)])
        d.payloadLength = tcpLength - dataOffset
        var pseudo = d.source + d.destination
        pseudo += d.isIPv4 ? [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xff)]
            : [0, 0, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xff), 0, 0, 0, 6]
        let s = onesComplementSum(pseudo[...])
        d.tcpChecksumOK = onesComplementSum(f[tcp..<(tcp + tcpLength)], initial: s) == 0xffff
        return d
    }
}

/// A scenario generated in memory: frames, times, labels.
struct Generated {
    var frames: [[UInt8]] = []
    var times: [Int64] = []
    var labels: [FrameLabel] = []
    var stats = ScenarioStats()

    init(_ name: String, seed: UInt64 = 1, packets: Int = 4000) {
        let g = ScenarioGenerator(scenario: Scenario(name: name)!, seed: seed, packets: packets)
        var frames: [[UInt8]] = [], times: [Int64] = [], labels: [FrameLabel] = []
        stats = g.run { f, t, l in
            frames.append(Array(f)); times.append(t); labels.append(l)
        }
        self.frames = frames; self.times = times; self.labels = labels
    }

    func decoded() -> [Decoded] {
        zip(frames, times).map { f, t in
            var d = Decoder.decode(f) ?? Decoded()
            d.time = t
            return d
        }
    }
}
