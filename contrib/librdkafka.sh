#!/bin/sh
# Builds the librdkafka that k2mc links, from Debian's own source packages:
# contrib/librdkafka.sh OUT CACHE [PINFILE]
#   OUT    where it is installed (include/, lib/librdkafka.a, VERSION)
#   CACHE  where Debian's tarballs and this script's own apt state are kept
# PINFILE (default contrib/librdkafka.pin) names the pinned upstream version
# and the SHA-256 of Debian's .orig.tar.gz, and the fallback.
#
# Why from Debian: bookworm's librdkafka (2.0.2) cannot log in with
# SASL/SCRAM to Kafka 4 and lacks the KIP-848 group protocol; Debian's newer
# suites carry newer ones as source. apt fetches them with a source list of
# this script's own (in CACHE), so the system's apt configuration is never
# read or changed, and apt checks what the .dsc signs; the tarball is then
# checked against the pin here. Nothing is installed into the system.
# Release files are taken past their Valid-Until (a mirror or proxy whose
# unstable lags the clock): what is built is the tarball, and its SHA-256 is
# the pin's, so stale metadata can at most name no usable version.
#
# A tarball already in CACHE that matches its pin is used without the
# network (the package build copies it in). When Debian no longer serves the
# pin, this says so, names the versions it serves, and builds the fallback;
# never silently: the last line names the version built, and k2mc -V and its
# start-up log name the one linked.
set -eu

out=$1
cache=$2
pinfile=${3:-contrib/librdkafka.pin}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
cache=$(cd "$cache" && pwd)

say() { echo "librdkafka: $*" >&2; }

pin_field() { # ROLE FIELD
	awk -v r="$1" -v f="$2" '$1 == r { print $f; exit }' "$pinfile"
}
pin_ver=$(pin_field pin 2)
pin_sha=$(pin_field pin 3)
fb_ver=$(pin_field fallback 2)
fb_sha=$(pin_field fallback 3)
[ -n "$pin_ver" ] && [ -n "$pin_sha" ] || { say "no pin line in $pinfile"; exit 1; }

apt_dir=$cache/apt
apt_opts() {
	echo "-q -o Dir::Etc::SourceList=$apt_dir/sources.list" \
		"-o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$apt_dir/lists" \
		"-o Dir::Cache=$apt_dir/cache -o Debug::NoLocking=1" \
		"-o APT::Sandbox::User=$(id -un) -o Acquire::Check-Valid-Until=false"
}
apt_ready=""
apt_update() {
	[ -z "$apt_ready" ] || return 0
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
	# every suite named in the pin file, from Debian's archive
	awk '$1 !~ /^#/ && NF >= 4 { print "deb-src http://deb.debian.org/debian " $4 " main" }' \
		"$pinfile" | sort -u > "$apt_dir/sources.list"
	# shellcheck disable=SC2046
	# One suite that fails (unreachable, or a mirror's unstable found stale)
	# must not hide the others: the fallback's suite may still be there.
	if ! apt-get $(apt_opts) update > "$apt_dir/update.log" 2>&1; then
		say "apt-get update of Debian's source lists failed (see $apt_dir/update.log)"
		[ -n "$(served_versions)" ] || return 1
		say "using the suites it did fetch"
	fi
	apt_ready=1
}
served_versions() {
	# shellcheck disable=SC2046
	apt-cache $(apt_opts) showsrc librdkafka 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -uV
}

sha_ok() { # FILE SHA
	[ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# fetch VERSION SHA: the tarball in $cache, checked; 0 when it is there
fetch() {
	tar=$cache/librdkafka_$1.orig.tar.gz
	sha_ok "$tar" "$2" && return 0
	apt_update || return 1
	rev=$(served_versions | grep -E "^([0-9]+:)?$(echo "$1" | sed 's/\./\\./g')-" | tail -1)
	[ -n "$rev" ] || return 1
	rm -rf "$cache/dl" && mkdir -p "$cache/dl"
	# shellcheck disable=SC2046
	if ! (cd "$cache/dl" && apt-get $(apt_opts) source --download-only "librdkafka=$rev") \
		> "$apt_dir/source.log" 2>&1; then
		say "apt-get source librdkafka=$rev failed (see $apt_dir/source.log)"
		return 1
	fi
	if ! sha_ok "$cache/dl/librdkafka_$1.orig.tar.gz" "$2"; then
		say "Debian's librdkafka_$1.orig.tar.gz does not match the SHA-256 in $pinfile; not used"
		return 1
	fi
	mv "$cache/dl/librdkafka_$1.orig.tar.gz" "$tar"
	cp "$cache/dl/librdkafka_$rev.dsc" "$cache/" 2>/dev/null || true
	rm -rf "$cache/dl"
	say "fetched librdkafka $1 (Debian source package $rev), SHA-256 checked"
}

if fetch "$pin_ver" "$pin_sha"; then
	ver=$pin_ver sha=$pin_sha
else
	served=$(served_versions | tr '\n' ' ')
	say "Debian does not serve the pinned librdkafka $pin_ver${served:+ (it serves: $served)}"
	[ -n "$fb_ver" ] || { say "no fallback in $pinfile"; exit 1; }
	if ! fetch "$fb_ver" "$fb_sha"; then
		say "nor the fallback $fb_ver: cannot build k2mc's librdkafka (or use make RDKAFKA=system)"
		exit 1
	fi
	say "FALLING BACK to librdkafka $fb_ver (Debian 13): SASL/SCRAM works; KIP-848 is a preview there"
	ver=$fb_ver sha=$fb_sha
fi

stamp="$ver $sha"
if [ -f "$out/lib/librdkafka.a" ] && [ "$(cat "$out/.built" 2>/dev/null)" = "$stamp" ]; then
	echo "librdkafka: $ver (built in $out)"
	exit 0
fi

# Build in a scratch directory, install into OUT: headers and the static
# library (the shared one is not linked; k2mc names librdkafka.a by path).
work=$cache/build-$ver
rm -rf "$work" "$out/include" "$out/lib" "$out/.built"
mkdir -p "$work"
tar -xzf "$cache/librdkafka_$ver.orig.tar.gz" -C "$work" --strip-components=1
log=$cache/build-$ver.log
say "building $ver (log: $log)"
(
	cd "$work"
	./configure --prefix="$out" > "$log" 2>&1
	make -C src -j"$(nproc 2>/dev/null || echo 2)" librdkafka.a >> "$log" 2>&1
) || { tail -20 "$log" >&2; say "build of $ver failed (log: $log)"; exit 1; }
mkdir -p "$out/include/librdkafka" "$out/lib"
cp "$work/src/rdkafka.h" "$work/src/rdkafka_mock.h" "$out/include/librdkafka/"
cp "$work/src/librdkafka.a" "$out/lib/"
echo "$ver" > "$out/VERSION"
echo "$stamp" > "$out/.built"
rm -rf "$work"
echo "librdkafka: $ver (built in $out)"
