#!/usr/bin/env bash
# The clean-machine check of a built package (the test suite runs it; it is as useful by hand):
#
#   scripts/package-check.sh reflectguard_0.1.0_amd64.deb [NAMESPACE-PREFIX]
#
# In a throwaway network namespace with a private mount namespace in which the Swift toolchain's
# directory is hidden (an empty tmpfs over it) and /etc, /usr and /var are overlays on a tmpfs
# (every write of dpkg and the maintainer scripts vanishes with the namespace; the machine's own
# package database is never touched): `dpkg -i`, `reflectguard --version`, the unit's ExecStart
# as the unit's user with its one capability (refusing to start while unconfigured, then running
# with readiness through a NOTIFY_SOCKET and its log through a journald socket), `reflectguard
# reload` with a good and a broken configuration, then `dpkg -r` and `dpkg --purge`. One line per
# check, `ok NAME` or `FAIL NAME: why`; exit 0 when every check passed.
set -uo pipefail

if [[ ${1:-} != --inside ]]; then
    [[ $# -ge 1 && -f $1 ]] || { echo "usage: $0 DEB [NAMESPACE-PREFIX]" >&2; exit 2; }
    deb=$(realpath "$1")
    ns=${2:-rgpkg}-$$
    toolchain=
    if swift=$(command -v swift); then
        # .../usr/bin/swift → the toolchain's root directory.
        toolchain=$(dirname "$(dirname "$(dirname "$(readlink -f "$swift")")")")
    fi
    # The mount point of the namespace's tmpfs: on the machine's /tmp, empty, removed after.
    work=$(mktemp -d /tmp/rg-package-check.XXXXXX)
    ip netns add "$ns" || exit 1
    trap 'ip netns del "$ns" 2>/dev/null; rmdir "$work" 2>/dev/null' EXIT
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" unshare --mount --propagation private bash "$0" --inside "$deb" "$toolchain" "$work"
    exit $?
fi

deb=$2
toolchain=$3
work=$4
failed=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }

# --- the clean machine ----------------------------------------------------------------------
mount -t tmpfs -o mode=0755 rg-package-check "$work" || { echo "FAIL setup: tmpfs"; exit 1; }
for d in etc usr var; do
    mkdir -p "$work/$d.up" "$work/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d.up,workdir=$work/$d.work" "/$d" \
        || { echo "FAIL setup: overlay on /$d"; exit 1; }
done
if [[ -n $toolchain && $toolchain != / && -d $toolchain ]]; then
    mount -t tmpfs -o ro,size=4k rg-hidden-toolchain "$toolchain" || { echo "FAIL setup: hiding $toolchain"; exit 1; }
fi
# systemd's sockets, ours: a journald socket (a listener writes each entry it gets) and no
# /run/systemd/system, so the maintainer scripts take the no-systemd path.
mkdir -p /run/systemd
mount -t tmpfs -o mode=0755 rg-run-systemd /run/systemd
mkdir -p /run/systemd/journal
listen() {  # SOCKET OUTPUT: every datagram, NUL-separated
    python3 - "$1" "$2" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777)
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b"\0")
PY
}
listen /run/systemd/journal/socket "$work/journal"
listen "$work/notify" "$work/notify.log"
listeners=$(jobs -p)
trap 'kill -9 $listeners 2>/dev/null; [[ -n ${agent:-} ]] && kill -9 $agent 2>/dev/null' EXIT
for _ in $(seq 50); do [[ -S $work/notify && -S /run/systemd/journal/socket ]] && break; sleep 0.1; done

if [[ -n $toolchain ]] && command -v swift >/dev/null 2>&1 && swift --version >/dev/null 2>&1; then
    fail toolchain-hidden "swift still runs"
else
    ok toolchain-hidden
fi

# --- install ---------------------------------------------------------------------------------
if out=$(dpkg -i "$deb" 2>&1); then ok dpkg-install; else fail dpkg-install "$out"; fi
if v=$(reflectguard --version 2>&1) && [[ $v == "reflectguard "* ]]; then ok "version ($v)"; else fail version "$v"; fi
if ldd /usr/bin/reflectguard | grep -q "not found"; then fail libraries "$(ldd /usr/bin/reflectguard | grep 'not found')"; else ok libraries; fi
if nft list table inet reflectguard >/dev/null 2>&1; then fail install-enforces-nothing "a table after install"; else ok install-enforces-nothing; fi
[[ -f /etc/reflectguard/reflectguard.conf ]] && ok conffile || fail conffile "missing"
man -w reflectguard >/dev/null 2>&1 && ok man-page || fail man-page "man -w reflectguard"
complete_words() {  # WORDS...: what bash completion offers for the last word
    bash -c 'source /usr/share/bash-completion/completions/reflectguard; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
             _reflectguard 2>/dev/null; echo "${COMPREPLY[*]}"' _ "$@"
}
options=$(complete_words reflectguard run --con)
defines=$(complete_words reflectguard nft generate -D rst_r)
actions=$(complete_words reflectguard nft ch)
if [[ $options == *--config* && $defines == *rst_rate=* && $actions == check ]]; then
    ok completion
else
    fail completion "run --con: '$options'; -D rst_r: '$defines'; nft ch: '$actions'"
fi

# --- the unit's command lines, as the unit runs them -------------------------------------------
unit=/lib/systemd/system/reflectguard.service
key() { sed -n "s/^$1=//p" "$unit" | head -1; }
user=$(key User)
as_unit() {
    setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=+net_admin --ambient-caps=+net_admin \
        --bounding-set=-all,+net_admin --no-new-privs "$@"
}
read -r -a start_pre <<<"$(key ExecStartPre)"
read -r -a start <<<"$(key ExecStart)"
read -r -a reload <<<"$(key ExecReload)"
[[ $(key Type) == notify ]] && ok unit-type-notify || fail unit-type-notify "$(key Type)"

out=$(as_unit "${start[@]}" 2>&1); rc=$?
if [[ $rc -eq 2 && $out == *"no protected network"* ]] && ! nft list table inet reflectguard >/dev/null 2>&1; then
    ok unconfigured-refuses
else
    fail unconfigured-refuses "exit $rc: $out"
fi

conf=/etc/reflectguard/reflectguard.conf
sed -i 's|^define protected_v4 = { }|define protected_v4 = { 198.18.2.0/24 }|' "$conf"
out=$(as_unit "${start_pre[@]}" 2>&1) && ok exec-start-pre || fail exec-start-pre "$out"

stream=$work/agent.stderr
: >"$stream"
NOTIFY_SOCKET=$work/notify JOURNAL_STREAM=$(stat -c %d:%i "$stream") as_unit "${start[@]}" 2>>"$stream" &
agent=$!
ready=
for _ in $(seq 200); do
    if tr '\0' '\n' <"$work/notify.log" 2>/dev/null | grep -q '^READY=1'; then ready=1; break; fi
    kill -0 $agent 2>/dev/null || break
    sleep 0.1
done
listed=
if [[ -n $ready ]]; then
    # READY=1 follows the apply; a listing can still fail on a loaded machine (nft's own retries):
    # ask a few times before calling the rules absent.
    for _ in $(seq 10); do
        listed=$(nft list set inet reflectguard protected4 2>&1)
        grep -q 198.18.2.0/24 <<<"$listed" && break
        sleep 0.5
    done
fi
if [[ -n $ready ]] && grep -q 198.18.2.0/24 <<<"$listed"; then
    ok exec-start-ready-with-rules
else
    fail exec-start-ready-with-rules "ready=$ready; nft: $listed; stderr: $(head -c 2000 "$stream"); journal: $(tr '\0' '\n' <"$work/journal" | grep '^MESSAGE=' | head -c 2000)"
fi
if tr '\0' '\n' <"$work/journal" | grep -q '^REFLECTGUARD_EVENT=start$' \
    && tr '\0' '\n' <"$work/journal" | grep -q '^PRIORITY=6$' \
    && ! grep -q '"event":"start"' "$stream"; then
    ok journald-native
else
    fail journald-native "journal: $(tr '\0' '\n' <"$work/journal" | head -20) stderr: $(head -c 500 "$stream")"
fi

# --- reload: good, then broken ------------------------------------------------------------------
sed -i 's|^define protected_v4 = .*|define protected_v4 = { 198.18.2.0/24, 198.18.5.0/24 }|' "$conf"
before_notify=$(tr '\0' '\n' <"$work/notify.log" | grep -c '^READY=1')
listed=
if out=$(as_unit "${reload[@]}" 2>&1); then
    # The reply follows the apply; the listing itself can fail on a loaded machine (nft's own
    # retries when a generation changes during the dump): ask a few times, as after the start.
    for _ in $(seq 10); do
        listed=$(nft list set inet reflectguard protected4 2>&1)
        grep -q 198.18.5.0/24 <<<"$listed" && break
        sleep 0.5
    done
fi
if grep -q 198.18.5.0/24 <<<"$listed"; then
    ok reload-applied
else
    fail reload-applied "reload: $out; nft: $listed"
fi
notes=$(tr '\0' '\n' <"$work/notify.log")
if grep -q '^RELOADING=1' <<<"$notes" && (( $(grep -c '^READY=1' <<<"$notes") > before_notify )); then
    ok reload-notified
else
    fail reload-notified "$notes"
fi

out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/reflectguard reload 2>&1); rc=$?
[[ $rc -eq 1 && $out == *"may not control the agent"* ]] && ok reload-needs-owner || fail reload-needs-owner "exit $rc: $out"

rules_before=$(nft list table inet reflectguard; iptables-nft-save 2>/dev/null | grep -c reflectguard)
echo 'define rst_rate = banana' >>"$conf"
line=$(wc -l <"$conf")
out=$(as_unit "${reload[@]}" 2>&1); rc=$?
if [[ $rc -eq 3 && $out == *"$conf:$line:"* ]]; then ok "reload-refused (exit 3: ${out//$'\n'/ })"; else fail reload-refused "exit $rc: $out"; fi
rules_after=$(nft list table inet reflectguard; iptables-nft-save 2>/dev/null | grep -c reflectguard)
[[ $rules_before == "$rules_after" ]] && ok rules-unchanged || fail rules-unchanged "$(diff <(echo "$rules_before") <(echo "$rules_after"))"
kill -0 $agent 2>/dev/null && ok agent-still-running || fail agent-still-running "exited"
out=$(as_unit "${start_pre[@]}" 2>&1); rc=$?
[[ $rc -eq 3 && $out == *"$conf:$line:"* ]] && ok check-refuses-broken || fail check-refuses-broken "exit $rc: $out"

# --- remove, purge ------------------------------------------------------------------------------
if out=$(dpkg -r reflectguard 2>&1); then ok dpkg-remove; else fail dpkg-remove "$out"; fi
for _ in $(seq 100); do kill -0 $agent 2>/dev/null || break; sleep 0.1; done
if kill -0 $agent 2>/dev/null; then fail agent-stopped "still running"; else wait $agent; ok "agent-stopped (exit $?)"; fi
agent=
if nft list tables 2>/dev/null | grep -q reflectguard || iptables-nft-save 2>/dev/null | grep -q reflectguard \
    || ip6tables-nft-save 2>/dev/null | grep -q reflectguard; then
    fail no-rule-left "$(nft list tables; iptables-nft-save | grep reflectguard)"
else
    ok no-rule-left
fi
[[ -f $conf ]] && ok remove-keeps-conffile || fail remove-keeps-conffile "gone"
if out=$(dpkg --purge reflectguard 2>&1) && [[ ! -e /etc/reflectguard && ! -e /usr/bin/reflectguard ]]; then
    ok dpkg-purge
else
    fail dpkg-purge "$out"
fi
exit $failed
