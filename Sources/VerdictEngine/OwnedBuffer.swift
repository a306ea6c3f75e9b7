#if canImport(Glibc)
import Glibc
#endif

/// Memory with exactly one owner: allocated in `init`, released in `deinit`, once. Every table
/// and buffer of the engine lives in one of these (or in a `~Copyable` type built from them:
/// `GroupTable`, `PrefixMatcher`, `HoldQueue`, the engine's `Tuning`), so the compiler, not a
/// comment, rules out the two ways hand-freed memory goes wrong: a copy of the owner is an
/// error (no alias can outlive or double-free it), and nothing frees it by hand (replacing an
/// owner, e.g. a matcher on a policy change, destroys the old one exactly once).
///
/// The one way the engine avoids dynamic exclusivity checks (class stored `var`s pay one on every
/// access; measured: ~8% of a decision): state lives in an `OwnedBuffer` held in a `let`, read and
/// written through its `nonmutating` addressors. Not `@exclusivity(unchecked)` on class
/// properties, and not copyable structs made "immutable" by hiding raw pointers in them: those
/// were the other two ways, and neither lets the compiler see who frees what. The price is the
/// same as a raw pointer's: no bounds check in release builds (an `assert` in debug builds), and
/// the owner's single-threaded use is the caller's promise (one engine per worker thread).
///
/// `base` is for the borrowing code of the owner's own methods (a local `let t = tuning.base`,
/// element addresses for in-place updates); never store it beyond the owner's life.
struct OwnedBuffer<Element: ~Copyable>: ~Copyable {
    let base: UnsafeMutablePointer<Element>
    let count: Int
    /// Bytes of the anonymous mapping holding the elements; 0 for a heap allocation.
    private let mappedBytes: Int
    /// Elements `init` initialised, which `deinit` deinitialises (0 for lazily touched memory).
    private let initialized: Int

    /// One element (a value of a `~Copyable` type included).
    init(_ value: consuming Element) {
        base = .allocate(capacity: 1)
        base.initialize(to: value)
        count = 1
        mappedBytes = 0
        initialized = 1
        AllocationLedger.current?.allocated(UnsafeRawPointer(base))
    }

    deinit {
        AllocationLedger.current?.freed(UnsafeRawPointer(base))
        base.deinitialize(count: initialized)
        #if canImport(Glibc)
        if mappedBytes > 0 {
            // munmap fails only on a bad range, which would be a bug here.
            let rc = munmap(UnsafeMutableRawPointer(base), mappedBytes)
            precondition(rc == 0, "munmap of an OwnedBuffer failed")
            return
        }
        #endif
        base.deallocate()
    }

    @inline(__always)
    subscript(i: Int) -> Element {
        unsafeAddress { assert(i >= 0 && i < count); return UnsafePointer(base + i) }
        nonmutating unsafeMutableAddress { assert(i >= 0 && i < count); return base + i }
    }

    /// The first (for a one-element buffer, the only) element.
    @inline(__always)
    var pointee: Element {
        unsafeAddress { UnsafePointer(base) }
        nonmutating unsafeMutableAddress { base }
    }

    /// Whether the memory is an anonymous mapping (the large tables; see `init(mapping:)`).
    var isMapped: Bool { mappedBytes > 0 }
}

extension OwnedBuffer where Element: Copyable {
    /// `count` copies of `value` (at least one element, so `base` is always valid).
    init(repeating value: Element, count: Int) {
        let n = max(1, count)
        base = .allocate(capacity: n)
        base.initialize(repeating: value, count: n)
        self.count = n
        mappedBytes = 0
        initialized = n
        AllocationLedger.current?.allocated(UnsafeRawPointer(base))
    }

    /// The elements of `elements`; `count` is theirs, and an empty buffer still has a valid `base`.
    init(copying elements: [Element]) {
        base = .allocate(capacity: max(1, elements.count))
        base.initialize(from: elements, count: elements.count)
        count = elements.count
        mappedBytes = 0
        initialized = elements.count
        AllocationLedger.current?.allocated(UnsafeRawPointer(base))
    }
}

extension OwnedBuffer where Element: BitwiseCopyable {
    /// `count` elements, uninitialised (plain bytes, so nothing to deinitialise), in an anonymous
    /// mapping with transparent huge pages requested: the large tables are probed at random over
    /// up to ~100 MB, and with 4 KiB pages nearly every probe was a TLB miss on top of the cache
    /// miss (measured: ~3x slower with a 1M table). The kernel maps pages as they are first
    /// touched (`populate` has it do so at once). Without a mapping (address space exhausted) it
    /// falls back to the allocator, which then fails the same way, loudly.
    init(mapping count: Int) {
        let bytes = max(1, count) * MemoryLayout<Element>.stride
        self.count = count
        initialized = 0
        #if canImport(Glibc)
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if let p, p != MAP_FAILED {
            // Advice only: without THP (or with it disabled) the table works the same, slower.
            _ = madvise(p, bytes, MADV_HUGEPAGE)
            base = p.bindMemory(to: Element.self, capacity: max(1, count))
            mappedBytes = bytes
            AllocationLedger.current?.allocated(UnsafeRawPointer(base))
            return
        }
        #endif
        base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            .bindMemory(to: Element.self, capacity: max(1, count))
        mappedBytes = 0
        AllocationLedger.current?.allocated(UnsafeRawPointer(base))
    }

    /// Has the kernel back every page of a mapped buffer now (MADV_POPULATE_WRITE, Linux 5.14+;
    /// advice only, ignored where unsupported). Otherwise the first packet to land in each huge
    /// page waits for the kernel to allocate and zero it: measured as 10 ms of added p99 connect
    /// latency right after the agent started. Returns whether the kernel did.
    @discardableResult
    func populate() -> Bool {
        #if canImport(Glibc)
        if mappedBytes > 0 { return madvise(UnsafeMutableRawPointer(base), mappedBytes, 23 /* MADV_POPULATE_WRITE */) == 0 }
        #endif
        return false
    }
}
