#if canImport(Glibc)
import Glibc
#endif
import NFQueue

/// Where the metrics endpoint listens, taken as Prometheus exporters take `--web.listen-address`:
/// an address, a name (resolved at start; of several addresses the first IPv4 one, as Go's
/// `net.Listen` does, so `localhost:9477` is 127.0.0.1 where /etc/hosts lists both), or "" for
/// every interface: the IPv6 wildcard with IPV6_V6ONLY off, which takes IPv4 too, or 0.0.0.0
/// where the kernel has no IPv6.
enum MetricsListen {
    /// A socket address to bind, and its family.
    struct Candidate {
        var family: Int32
        var storage: sockaddr_storage
        var length: socklen_t
    }

    static func candidates(host: String, port: UInt16) throws(SystemCallError) -> [Candidate] {
        if host.isEmpty { return [v6(in6addr_any, port), v4(in_addr(s_addr: INADDR_ANY), port)] }
        var a6 = in6_addr()
        if inet_pton(AF_INET6, host, &a6) == 1 { return [v6(a6, port)] }
        var a4 = in_addr()
        if inet_pton(AF_INET, host, &a4) == 1 { return [v4(a4, port)] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0 else {
            throw SystemCallError("resolving metrics host '\(host)': \(String(cString: gai_strerror(rc)))", errno: EINVAL)
        }
        defer { freeaddrinfo(list) }
        var found: [Candidate] = []
        var p = list
        while let ai = p {
            if ai.pointee.ai_family == AF_INET, let sa = ai.pointee.ai_addr {
                let a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                found.append(v4(a, port))
            } else if ai.pointee.ai_family == AF_INET6, let sa = ai.pointee.ai_addr {
                let a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                found.append(v6(a, port))
            }
            p = ai.pointee.ai_next
        }
        // Of a name's addresses, the IPv4 ones first (stable within each family).
        return found.filter { $0.family == AF_INET } + found.filter { $0.family == AF_INET6 }
    }

    private static func v4(_ address: in_addr, _ port: UInt16) -> Candidate {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr = address
        return Candidate(family: AF_INET, storage: storage(of: a), length: socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    private static func v6(_ address: in6_addr, _ port: UInt16) -> Candidate {
        var a = sockaddr_in6()
        a.sin6_family = sa_family_t(AF_INET6)
        a.sin6_port = port.bigEndian
        a.sin6_addr = address
        return Candidate(family: AF_INET6, storage: storage(of: a), length: socklen_t(MemoryLayout<sockaddr_in6>.size))
    }

    private static func storage<T>(of a: T) -> sockaddr_storage {
        var s = sockaddr_storage()
        withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &s) { $0.copyMemory(from: src) } }
        return s
    }

    /// `192.0.2.1:9477`, `[::]:9477`: what a socket is bound to, as a client would write it.
    static func describe(_ s: sockaddr_storage) -> (text: String, port: UInt16) {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return withUnsafeBytes(of: s) { raw -> (String, UInt16) in
            let port = UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))   // sin_port / sin6_port
            if Int32(s.ss_family) == AF_INET6 {
                var a = raw.load(fromByteOffset: 8, as: in6_addr.self)                     // sin6_addr
                inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count))
                return ("[\(String(decoding: buffer.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self))]:\(port)", port)
            }
            var a = raw.load(fromByteOffset: 4, as: in_addr.self)                           // sin_addr
            inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count))
            return ("\(String(decoding: buffer.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)):\(port)", port)
        }
    }
}
