#!/usr/bin/env bash
# Builds the Debian package reflectguard_VERSION_ARCH.deb in the repository's root: the binary
# (Swift standard library and Foundation linked statically, so it runs on a machine without the
# Swift toolchain; BENCHMARKS.md "Packaging" has the measured choice), the systemd unit, the man
# page, bash completion, the default configuration (a conffile), the licence and the docs, and
# maintainer scripts that never leave a router without forwarding (install starts nothing until
# configured; remove stops the agent, which removes its rules, and removes rules left without one).
#
#   scripts/package.sh            # build, then package
#   RG_PACKAGE_SKIP_BUILD=1 ...   # package the binary already in .build/package (tests, reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=$(sed -n 's/^let version = "\(.*\)"$/\1/p' Sources/reflectguard/main.swift)
[[ -n $version ]] || { echo "package: no version in Sources/reflectguard/main.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)
scratch=.build/package
binary=$scratch/release/reflectguard

# Its own scratch directory: the static link must not replace the release build the tests use,
# and each keeps its own incremental state.
if [[ ${RG_PACKAGE_SKIP_BUILD:-0} != 1 || ! -x $binary ]]; then
    echo "package: static release build"
    swift build -c release --static-swift-stdlib --product reflectguard --scratch-path "$scratch" 2>&1 \
        | grep -E "error|Compiling|Linking|Build" || true
    [[ -x $binary ]] || { echo "package: build failed" >&2; exit 1; }
fi
if ldd "$binary" | grep -q "libswift\|libFoundation"; then
    echo "package: $binary still loads Swift runtime libraries:" >&2
    ldd "$binary" >&2
    exit 1
fi

stage=$(mktemp -d "$root/$scratch/deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions" "$stage/etc/reflectguard" "$stage/usr/share/doc/reflectguard"
# Stripped: the symbol table is for debuggers (a third of the file); Swift's runtime metadata
# and backtraces do not need it.
strip --strip-unneeded -o "$stage/usr/bin/reflectguard" "$binary"
chmod 0755 "$stage/usr/bin/reflectguard"
install -m 0644 scripts/reflectguard.service "$stage/lib/systemd/system/reflectguard.service"
gzip -9n <docs/reflectguard.1 >"$stage/usr/share/man/man1/reflectguard.1.gz"
install -m 0644 scripts/package/reflectguard.bash-completion "$stage/usr/share/bash-completion/completions/reflectguard"
install -m 0644 scripts/package/reflectguard.conf "$stage/etc/reflectguard/reflectguard.conf"
install -m 0644 LICENSE "$stage/usr/share/doc/reflectguard/copyright"
install -m 0644 README.md docs/operations.md docs/output.md "$stage/usr/share/doc/reflectguard/"
for s in postinst prerm postrm; do install -m 0755 "scripts/package/$s" "$stage/DEBIAN/$s"; done
echo /etc/reflectguard/reflectguard.conf >"$stage/DEBIAN/conffiles"

# Shared libraries the binary needs, as Debian packages (dpkg-shlibdeps reads the symbols files
# of the installed libraries, so the versions are the ones it was linked against).
mkdir -p "$stage/debian"
printf 'Source: reflectguard\n\nPackage: reflectguard\nArchitecture: any\n' >"$stage/debian/control"
depends=$(cd "$stage" && dpkg-shlibdeps -O --ignore-missing-info usr/bin/reflectguard 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
rm -rf "$stage/debian"
[[ -n $depends ]] || { echo "package: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: reflectguard
Version: $version
Architecture: $arch
Maintainer: ReflectGuard developers <dev@reflectguard.invalid>
Installed-Size: $size
Depends: $depends, passwd
Recommends: nftables, iptables
Section: net
Priority: optional
Description: inline NFQUEUE mitigation of spoofed SYN-ACK reflection and RST floods
 ReflectGuard receives the few TCP packets that matter through netfilter's
 NFQUEUE and drops spoofed reflection SYN-ACKs (SYN-ACKs that answer no SYN the
 protected side sent) and rate-limits and validates RSTs, with a reason for
 every decision. When a flood outgrows the queue it arms kernel enforcement for
 the victim prefix. It also scores captures in a dry run and generates the
 nftables rules it runs with.
 .
 The service starts only once /etc/reflectguard/reflectguard.conf names a
 protected network.
CONTROL
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

out="reflectguard_${version}_${arch}.deb"
find "$stage" -type d -exec chmod 0755 {} +
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "package: $out ($(du -h "$out" | cut -f1)), Depends: $depends"
