import PacketParser
@testable import VerdictEngine

/// Hand-built packets: the engine tests do not depend on the parser.
func tcp(src: String, dst: String, sport: UInt16, dport: UInt16, flags: TCPFlags,
         seq: UInt32 = 0, ack: UInt32 = 0, window: UInt16 = 64240, payload: UInt16 = 0,
         options: TCPOptionSignature = linuxSYNOptions) -> ParsedPacket {
    var p = ParsedPacket()
    let s = IPAddress(src)!, d = IPAddress(dst)!
    p.network = s.isIPv4Mapped ? .ipv4 : .ipv6
    p.hasTCP = true
    p.ipProtocol = 6
    p.ttl = 64
    p.source = s
    p.destination = d
    p.sourcePort = sport
    p.destinationPort = dport
    p.flags = flags
    p.sequence = seq
    p.acknowledgment = ack
    p.window = window
    p.payloadLength = payload
    p.optionSignature = options
    return p
}

/// MSS 1460, SACK-permitted, timestamps, window scale 7: what a Linux SYN carries.
let linuxSYNOptions = TCPOptionSignature(rawValue: 1460 | (8 << 16) | (1 << 20) | (1 << 21) | (1 << 22))
/// MSS only: what a SYN-ACK to a bare crafted SYN carries.
let mssOnly = TCPOptionSignature(rawValue: 1460 | (1 << 22))

let synack: TCPFlags = [.syn, .ack]
let rstack: TCPFlags = [.rst, .ack]

/// Seconds of packet time.
func t(_ seconds: Double) -> Nanoseconds { Nanoseconds(seconds * 1e9) }

func policy(_ protected: [String] = ["198.18.2.0/24", "2001:db8:2::/64"],
            _ configure: (inout Policy) -> Void = { _ in }) -> Policy {
    var p = Policy()
    for c in protected { p.protected.insert(CIDR(c)!) }
    configure(&p)
    return p
}

let client = "198.18.2.2"
let server = "198.51.100.7"
