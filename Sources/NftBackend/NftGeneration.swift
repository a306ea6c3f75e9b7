#if canImport(Glibc)
import Glibc
#endif
import NFQueue
import SystemCalls

/// The nftables ruleset's generation id (NFT_MSG_GETGEN): the kernel counts it up with every
/// committed transaction, so an unchanged id means an unchanged ruleset, at the cost of one
/// netlink round trip. Any listing through libnftables instead builds nft's cache, set elements
/// included: measured here, 0.4 s of CPU per listing with 50 000 elements in one set, which the
/// pending-SYN sets of a busy network hold. The packet path's own set updates (`update @pending4`)
/// are no transactions and leave the id alone.
final class NftGeneration {
    // <linux/netlink.h>, <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>.
    private static let subsysNftables: UInt16 = 10      // NFNL_SUBSYS_NFTABLES
    private static let msgGetGen: UInt16 = 16           // NFT_MSG_GETGEN
    private static let msgNewGen: UInt16 = 15           // NFT_MSG_NEWGEN, the answer
    private static let attrGenId: UInt16 = 1            // NFTA_GEN_ID, u32, network order
    private static let msgGetTable: UInt16 = 1          // NFT_MSG_GETTABLE
    private static let msgNewTable: UInt16 = 0          // NFT_MSG_NEWTABLE, the answer
    private static let attrTableName: UInt16 = 1        // NFTA_TABLE_NAME, string
    private static let attrTableFlags: UInt16 = 2       // NFTA_TABLE_FLAGS, u32, network order
    static let tableDormant: UInt32 = 1                 // NFT_TABLE_F_DORMANT
    private static let familyInet: UInt8 = 1            // NFPROTO_INET
    private static let msgGetRule: UInt16 = 7           // NFT_MSG_GETRULE
    private static let msgNewRule: UInt16 = 6           // NFT_MSG_NEWRULE, the answer
    private static let attrRuleTable: UInt16 = 1        // NFTA_RULE_TABLE
    private static let attrRuleChain: UInt16 = 2        // NFTA_RULE_CHAIN
    private static let attrRuleHandle: UInt16 = 3       // NFTA_RULE_HANDLE
    private static let attrRuleExpressions: UInt16 = 4  // NFTA_RULE_EXPRESSIONS, NFTA_LIST_ELEMs
    private static let attrRuleUserdata: UInt16 = 7     // NFTA_RULE_USERDATA (comments)
    private static let attrExprName: UInt16 = 1         // NFTA_EXPR_NAME
    private static let msgGetSetElem: UInt16 = 13       // NFT_MSG_GETSETELEM
    private static let msgNewSetElem: UInt16 = 12       // NFT_MSG_NEWSETELEM, the answer
    private static let attrSetElemListTable: UInt16 = 1 // NFTA_SET_ELEM_LIST_TABLE
    private static let attrSetElemListSet: UInt16 = 2   // NFTA_SET_ELEM_LIST_SET
    private static let attrSetElemListElements: UInt16 = 3 // NFTA_SET_ELEM_LIST_ELEMENTS
    private static let msgGetObj: UInt16 = 19           // NFT_MSG_GETOBJ
    private static let msgNewObj: UInt16 = 18           // NFT_MSG_NEWOBJ, the answer
    private static let attrObjTable: UInt16 = 1         // NFTA_OBJ_TABLE
    private static let attrObjName: UInt16 = 2          // NFTA_OBJ_NAME
    private static let attrObjType: UInt16 = 3          // NFTA_OBJ_TYPE, u32, network order
    private static let attrObjData: UInt16 = 4          // NFTA_OBJ_DATA, nested
    private static let objectCounter: UInt32 = 1        // NFT_OBJECT_COUNTER
    private static let attrCounterBytes: UInt16 = 1     // NFTA_COUNTER_BYTES, u64, network order
    private static let attrCounterPackets: UInt16 = 2   // NFTA_COUNTER_PACKETS, u64, network order
    private static let nlmsgError: UInt16 = 2           // NLMSG_ERROR
    private static let nlmsgDone: UInt16 = 3            // NLMSG_DONE
    private static let requestFlag: UInt16 = 1          // NLM_F_REQUEST
    private static let dumpFlags: UInt16 = 0x300        // NLM_F_DUMP (ROOT | MATCH)

    /// Bytes of receive buffer: one dump answer at a time is read (at most 32 KiB a message,
    /// `exchange`), so the kernel's default (net.core.rmem_default, 208 KiB) is plenty.
    private static let receiveBufferBytes = 212_992

    private let socket: NetlinkSocket
    private var fd: Int32 { socket.fd }
    private var sequence: UInt32 = 0

    init() throws(NftError) {
        do throws(SystemCallError) {
            socket = try NetlinkSocket(receiveBufferBytes: Self.receiveBufferBytes) { fd in
                // A kernel that never answers must not hang the watchdog.
                var timeout = timeval(tv_sec: 1, tv_usec: 0)
                _ = try? syscallValue("setsockopt(SO_RCVTIMEO)") {
                    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                }
            }
        } catch { throw Self.failure(error) }
    }

    /// The current generation id.
    func current() throws(NftError) -> UInt32 {
        let answer = try request(Self.msgGetGen, family: 0, attributes: [], expect: Self.msgNewGen, what: "NFT_MSG_GETGEN")
        guard let id = answer?[Self.attrGenId], id.count >= 4 else {
            throw NftError("NFT_MSG_GETGEN: no generation id in the answer", rulesError: false)
        }
        return Self.bigEndian32(id)
    }

    /// The flags of table `inet NAME` (NFT_MSG_GETTABLE), nil when there is no such table: one
    /// round trip on the same socket, no listing (`list table` would fetch every set element).
    /// `nft add table inet NAME '{ flags dormant; }'` unhooks every chain of the table while the
    /// listing of its chains stays the same, so the flags are read on their own.
    func tableFlags(_ name: String) throws(NftError) -> UInt32? {
        var attribute = Array(name.utf8) + [0]
        attribute = Self.attribute(Self.attrTableName, attribute)
        guard let answer = try request(Self.msgGetTable, family: Self.familyInet, attributes: attribute,
                                       expect: Self.msgNewTable, what: "NFT_MSG_GETTABLE") else { return nil }
        guard let flags = answer[Self.attrTableFlags], flags.count >= 4 else { return 0 }
        return Self.bigEndian32(flags)
    }

    /// A fingerprint of the rules of table `inet NAME` and of the elements of its sets `sets`
    /// (NFT_MSG_GETRULE and NFT_MSG_GETSETELEM dumps filtered to that table and those sets): it
    /// changes with every rule added, removed or replaced in any of the table's chains and with
    /// every element of those sets, and with nothing else. Counter and quota values are left
    /// out (traffic moves them). Only for sets whose elements change by hand: a dump of the
    /// pending sets would cost what a listing does. nil when the table is gone.
    func contents(_ name: String, sets: [String]) throws(NftError) -> Int? {
        var hasher = Hasher()
        let table = Array(name.utf8) + [0]
        guard let rules = try dump(Self.msgGetRule, attributes: Self.attribute(Self.attrRuleTable, table),
                                   expect: Self.msgNewRule, what: "NFT_MSG_GETRULE") else { return nil }
        for rule in rules {
            for type in [Self.attrRuleChain, Self.attrRuleHandle, Self.attrRuleUserdata] {
                hasher.combine(type)
                rule[type].map { Self.combine(&hasher, $0) }
            }
            guard let expressions = rule[Self.attrRuleExpressions] else { continue }
            for expression in Self.attributes(expressions).lazy.map(\.payload) {
                let parts = Self.attributes(expression)
                let kind = parts.first { $0.type == Self.attrExprName }?.payload
                if let kind, Self.stateful.contains(Array(kind)) { Self.combine(&hasher, kind); continue }
                Self.combine(&hasher, expression)
            }
        }
        for set in sets {
            let request = Self.attribute(Self.attrSetElemListTable, table) + Self.attribute(Self.attrSetElemListSet, Array(set.utf8) + [0])
            hasher.combine(set)
            guard let batches = try dump(Self.msgGetSetElem, attributes: request, expect: Self.msgNewSetElem,
                                         what: "NFT_MSG_GETSETELEM \(set)") else {
                hasher.combine(-1)
                continue
            }
            for b in batches { b[Self.attrSetElemListElements].map { Self.combine(&hasher, $0) } }
        }
        return hasher.finalize()
    }

    /// The named counters of table `inet NAME` (an NFT_MSG_GETOBJ dump filtered by table and
    /// type, one round trip): name → packets and bytes. nil when the table is gone. libnftables'
    /// `list counters` would build its cache first, the pending sets' elements included.
    func counters(_ name: String) throws(NftError) -> [String: (packets: UInt64, bytes: UInt64)]? {
        let request = Self.attribute(Self.attrObjTable, Array(name.utf8) + [0])
            + Self.attribute(Self.attrObjType, withUnsafeBytes(of: Self.objectCounter.bigEndian) { Array($0) })
        guard let objects = try dump(Self.msgGetObj, attributes: request, expect: Self.msgNewObj,
                                     what: "NFT_MSG_GETOBJ") else { return nil }
        var out: [String: (packets: UInt64, bytes: UInt64)] = [:]
        for o in objects {
            guard let rawName = o[Self.attrObjName], let data = o[Self.attrObjData] else { continue }
            var packets: UInt64 = 0, bytes: UInt64 = 0
            for a in Self.attributes(data) where a.payload.count >= 8 {
                let v = a.payload.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                if a.type == Self.attrCounterPackets { packets = v }
                if a.type == Self.attrCounterBytes { bytes = v }
            }
            out[String(decoding: rawName.prefix { $0 != 0 }, as: UTF8.self)] = (packets, bytes)
        }
        return out
    }

    /// Expressions whose dumped data moves with traffic; name attributes, NUL included.
    private static let stateful: [[UInt8]] = ["counter", "quota"].map { Array($0.utf8) + [0] }

    private static func combine(_ hasher: inout Hasher, _ bytes: ArraySlice<UInt8>) {
        hasher.combine(bytes.count)
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    /// Sends one request and returns the answer's attributes by type; nil when the kernel
    /// answers ENOENT (no such object).
    private func request(_ type: UInt16, family: UInt8, attributes: [UInt8], expect: UInt16,
                         what: String) throws(NftError) -> [UInt16: ArraySlice<UInt8>]? {
        try exchange(type, flags: Self.requestFlag, family: family, attributes: attributes, expect: expect, what: what)?.first
    }

    /// A dump (NLM_F_DUMP) in family inet: every answer message's attributes; nil on ENOENT.
    private func dump(_ type: UInt16, attributes: [UInt8], expect: UInt16,
                      what: String) throws(NftError) -> [[UInt16: ArraySlice<UInt8>]]? {
        try exchange(type, flags: Self.requestFlag | Self.dumpFlags, family: Self.familyInet, attributes: attributes,
                     expect: expect, what: what)
    }

    private func exchange(_ type: UInt16, flags: UInt16, family: UInt8, attributes: [UInt8], expect: UInt16,
                          what: String) throws(NftError) -> [[UInt16: ArraySlice<UInt8>]]? {
        sequence &+= 1
        // nlmsghdr (len, type, flags, seq, pid) then nfgenmsg (family, version 0, res_id 0).
        var request = [UInt8]()
        func put16(_ v: UInt16) { withUnsafeBytes(of: v) { request += $0 } }
        func put32(_ v: UInt32) { withUnsafeBytes(of: v) { request += $0 } }
        put32(UInt32(20 + attributes.count))
        put16(Self.subsysNftables << 8 | type)
        put16(flags)
        put32(sequence)
        put32(0)
        request += [family, 0, 0, 0]
        request += attributes
        // Unconnected netlink sockets send to the kernel (port id 0).
        let sent: Int
        do throws(SystemCallError) { sent = try syscallValue("sendto") { send(fd, request, request.count, 0) } } catch {
            throw Self.failure(error)
        }
        guard sent == request.count else { throw NftError("\(what): request cut to \(sent) bytes", rulesError: false) }

        let dumping = flags & Self.dumpFlags != 0
        var answers: [[UInt16: ArraySlice<UInt8>]] = []
        // A dump's skbs are at most 32 KiB here (netlink's default); one more page for the header.
        var buffer = [UInt8](repeating: 0, count: 36_864)
        while true {
            let n: Int
            do throws(SystemCallError) { n = try syscallValue("recv") { recv(fd, &buffer, buffer.count, 0) } } catch {
                throw Self.failure(error)
            }
            guard n >= 16 else { throw NftError("\(what): short answer", rulesError: false) }
            let received = Array(buffer[0..<n])
            func u16(_ at: Int) -> UInt16 { UInt16(received[at]) | UInt16(received[at + 1]) << 8 }
            func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) | UInt32(u16(at + 2)) << 16 }
            var at = 0
            while at + 16 <= n {
                let length = Int(u32(at)), answerType = u16(at + 4), answerSequence = u32(at + 8)
                guard length >= 16, at + length <= n else {
                    throw NftError("\(what): answer of \(length) bytes cut to \(n - at)", rulesError: false)
                }
                defer { at += (length + 3) & ~3 }
                // An answer to an earlier request that timed out: skip it.
                if answerSequence != sequence { continue }
                if answerType == Self.nlmsgDone { return answers }
                if answerType == Self.nlmsgError {
                    let code = Int32(bitPattern: u32(at + 16))
                    if code == 0 { return answers }
                    if -code == ENOENT { return nil }
                    throw NftError("\(what): \(String(cString: strerror(-code)))", rulesError: false)
                }
                guard answerType == Self.subsysNftables << 8 | expect else {
                    throw NftError("\(what): unexpected answer type \(answerType)", rulesError: false)
                }
                var found: [UInt16: ArraySlice<UInt8>] = [:]
                for a in Self.attributes(received[(at + 20)..<(at + length)]) { found[a.type] = a.payload }
                answers.append(found)
                if !dumping { return answers }
            }
        }
    }

    /// The netlink attributes (type without the nested/byte-order bits, payload) in `bytes`.
    private static func attributes(_ bytes: ArraySlice<UInt8>) -> [(type: UInt16, payload: ArraySlice<UInt8>)] {
        var out: [(type: UInt16, payload: ArraySlice<UInt8>)] = []
        var at = bytes.startIndex
        while at + 4 <= bytes.endIndex {
            let length = Int(UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8)
            let type = (UInt16(bytes[at + 2]) | UInt16(bytes[at + 3]) << 8) & 0x3fff
            guard length >= 4, at + length <= bytes.endIndex else { break }
            out.append((type, bytes[(at + 4)..<(at + length)]))
            at += (length + 3) & ~3
        }
        return out
    }

    private static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        withUnsafeBytes(of: UInt16(4 + payload.count)) { out += $0 }
        withUnsafeBytes(of: type) { out += $0 }
        out += payload
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    private static func bigEndian32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    private static func failure(_ error: SystemCallError) -> NftError {
        if error.errno == EPERM { return NftRuleset.permissionError }
        return NftError("netlink \(error.call): \(error.reason)", rulesError: false)
    }
}
