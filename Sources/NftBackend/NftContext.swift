import CNftables
#if canImport(Glibc)
import Glibc
#endif

/// Why the rules could not be checked, applied or removed. `isRulesError` (nft rejected the text)
/// maps to exit 3, anything else (no permission, a missing tool) to exit 1.
public struct NftError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var isRulesError: Bool

    public init(_ message: String, rulesError: Bool) {
        self.message = message
        self.isRulesError = rulesError
    }

    public var description: String { message }
}

/// One libnftables context (`struct nft_ctx`), its output and errors captured in buffers so a
/// failure reports nft's messages together instead of printing half-way.
final class NftContext {
    private let ctx: OpaquePointer

    init() throws(NftError) {
        guard let c = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
            throw NftError("libnftables: nft_ctx_new failed (out of memory?)", rulesError: false)
        }
        ctx = c
        // Both return -1 only when the buffer cannot be set up.
        guard nft_ctx_buffer_output(ctx) == 0, nft_ctx_buffer_error(ctx) == 0 else {
            nft_ctx_free(c)
            throw NftError("libnftables: cannot buffer output", rulesError: false)
        }
    }

    deinit { nft_ctx_free(ctx) }

    struct Outcome {
        var ok: Bool
        var output: String
        var errors: String
    }

    /// Runs commands as one transaction. With `dryRun` the kernel checks the batch and commits
    /// nothing (nft -c).
    func run(_ commands: String, dryRun: Bool = false) -> Outcome {
        nft_ctx_set_dry_run(ctx, dryRun)
        let rc = nft_run_cmd_from_buffer(ctx, commands)
        return collect(rc)
    }

    /// Loads a file: libnftables then reports errors as FILE:LINE:COL, which the buffer form
    /// cannot (it prints the line and caret without a number).
    func runFile(_ path: String, dryRun: Bool) -> Outcome {
        nft_ctx_set_dry_run(ctx, dryRun)
        let rc = nft_run_cmd_from_filename(ctx, path)
        return collect(rc)
    }

    private func collect(_ rc: Int32) -> Outcome {
        // The getters hand back the buffer and reset it, so each run starts empty.
        let out = nft_ctx_get_output_buffer(ctx).map { String(cString: $0) } ?? ""
        let err = nft_ctx_get_error_buffer(ctx).map { String(cString: $0) } ?? ""
        return Outcome(ok: rc == 0, output: out, errors: err)
    }
}
