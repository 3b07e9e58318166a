#!/usr/bin/env bash
# The librdkafka fallback (issue 20): when Debian no longer serves the pinned
# version, the build says so, names the versions Debian serves, builds the
# fallback of contrib/librdkafka.pin, and k2mc -V and the build's last line
# name it. The pin is made unavailable by a pin file whose pinned version
# Debian never had; everything else is a fresh clone of this tree's HEAD,
# built as a newcomer would (make build/k2mc), in a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/k2mc-rdkfb.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "rdkafka-fallback: FAIL: $*" >&2; exit 1; }

git clone -q . "$work/k2mc"
fb=$(awk '$1 == "fallback" { print $2 }' contrib/librdkafka.pin)
# the same file with a pin Debian never served (the fallback line unchanged)
awk '$1 == "pin" { $2 = "0.0.1"; $3 = "0000000000000000000000000000000000000000000000000000000000000000" } { print }' \
	contrib/librdkafka.pin > "$work/unserved.pin"
start=$(date +%s)
# a top-level make, as a newcomer runs it, even under `make rdkafka-fallback-test`
# (a sub-make would end with its "Leaving directory" line)
(cd "$work/k2mc" && env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS make build/k2mc \
	RDK_PIN="$work/unserved.pin") > "$work/build.log" 2>&1 ||
	{ tail -30 "$work/build.log"; fail "make build/k2mc with an unserved pin failed"; }
grep -E 'does not serve the pinned librdkafka 0\.0\.1 \(it serves: [0-9]' "$work/build.log" ||
	fail "the build did not say the pin is not served, with the versions Debian serves"
grep -F "FALLING BACK to librdkafka $fb" "$work/build.log" || fail "no fallback message for $fb"
last=$(tail -1 "$work/build.log")
[ "$last" = "build/k2mc: linked with librdkafka $fb" ] ||
	fail "the build's last line is '$last', not the linked librdkafka $fb"
v=$("$work/k2mc/build/k2mc" -V)
grep -qF "librdkafka $fb" <<<"$v" || fail "k2mc -V says '$v'"
echo "rdkafka-fallback: ok: $v (built in $(( $(date +%s) - start )) s)"
