import Foundation
import Testing
import TestSupport

/// `reflectguard nft` as operators call it: exit codes and what `generate` prints. No privileges
/// needed (generate with an explicit backend never talks to the kernel).
@Suite struct NftCommandTests {
    static func run(_ args: [String]) -> NetnsLab.Output? {
        guard let bin = TestEnvironment.binary else { return nil }
        return NetnsLab.run([bin] + args)
    }

    @Test(arguments: [
        ["nft", "generate", "--backend", "xt", "-D", "nosuch=1"],
        ["nft", "generate", "--backend", "xt", "--protect", "198.18.2.0/40"],
        ["nft", "generate", "--backend", "sideways"],
        ["nft", "generate", "--hook", "bridge"],
        ["nft", "generate", "--queue", "3:1"],
        ["nft", "frobnicate"],
        ["nft"],
    ])
    func commandLineMistakesExit2(args: [String]) throws {
        guard let r = Self.run(args) else { TestEnvironment.unavailable("the reflectguard binary is not built"); return }
        #expect(r.status == 2, "\(args): \(r.stderr)")
        #expect(r.stderr.hasPrefix("Error: "))
        #expect(r.stderr.contains("--help"))
    }

    @Test func missingWordsAreNamedAndHelpAlwaysListsHelp() throws {
        guard let nft = Self.run(["nft"]) else { TestEnvironment.unavailable("the reflectguard binary is not built"); return }
        #expect(nft.stderr.hasPrefix("Error: missing action (generate, check, apply or remove)\n"), "\(nft.stderr)")
        let bare = Self.run([])!
        #expect(bare.status == 2)
        #expect(bare.stdout.isEmpty)
        #expect(bare.stderr.hasPrefix("Error: missing subcommand\n"), "\(bare.stderr)")
        #expect(bare.stderr.contains("See 'reflectguard --help'"))
        let list = Self.run(["lab", "list", "--help"])!
        #expect(list.status == 0)
        #expect(list.stdout.contains("USAGE: reflectguard lab list\n"), "\(list.stdout)")
        #expect(list.stdout.contains("-h, --help"))
    }

    @Test func aBadRulesFileExits3WithItsPosition() throws {
        let path = TestEnvironment.temporaryPath("rgt-rules-cmd.nft")
        try "# x\ndefine mode = sideways\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let r = Self.run(["nft", "generate", "--backend", "xt", "--rules", path]) else {
            TestEnvironment.unavailable("the reflectguard binary is not built"); return
        }
        #expect(r.status == 3)
        #expect(r.stderr.contains("\(path):2:15: error: mode: 'sideways'"), "\(r.stderr)")
        // An unreadable file has no position to name: a runtime failure (exit 1), one line.
        let missing = Self.run(["nft", "generate", "--backend", "xt", "--rules", path + ".absent"])!
        #expect(missing.status == 1)
        #expect(missing.stderr == "Error: cannot read rules file \(path).absent: No such file or directory\n", "\(missing.stderr)")
        let directory = Self.run(["nft", "generate", "--backend", "xt", "--rules", "/"])!
        #expect(directory.status == 1)
        #expect(directory.stderr == "Error: cannot read rules file /: Is a directory\n", "\(directory.stderr)")
    }

    @Test func generatePrintsTheXtablesRulesAndTheListingWarning() throws {
        guard let r = Self.run(["nft", "generate", "--backend", "xt", "--hook", "host", "--queue", "2:5",
                                "--protect", "198.18.2.0/24"]) else {
            TestEnvironment.unavailable("the reflectguard binary is not built"); return
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("define protected_v4 = { 198.18.2.0/24 }"))
        #expect(r.stdout.contains("#   iptables-nft -t mangle -I INPUT 1 -m mark --mark 0x10000000/0x10000000 -m comment --comment reflectguard -j NFQUEUE --queue-balance 2:5 --queue-bypass"))
        #expect(r.stdout.contains("#   ip6tables-nft -t mangle -I OUTPUT 1 "))
        #expect(r.stdout.contains("cannot load back"))
        let kernelOnly = Self.run(["nft", "generate", "--kernel-only"])!
        #expect(kernelOnly.status == 0)
        #expect(kernelOnly.stdout.contains("jump always"))
        #expect(!kernelOnly.stdout.contains("queue num"))
        #expect(!kernelOnly.stdout.contains("-j NFQUEUE"))
    }
}
