extension String {
    /// The text of a fixed C buffer a call filled (libpcap's errbuf, strftime's output), up to
    /// its first NUL, or the whole buffer when the call left none.
    public init(nulTerminated buffer: [CChar]) {
        let end = buffer.firstIndex(of: 0) ?? buffer.endIndex
        self = String(decoding: buffer[..<end].lazy.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
