#!/bin/sh
# Installs the Debian packages named on the command line that are not
# installed yet, for the Makefile's deps targets. As root: apt-get. As a user:
# through sudo when there is one (asking for a password on a terminal);
# otherwise it prints the one line to run as root and exits 1. Nothing else
# runs as root, so build/ stays the user's.
#
# Debian's memcached package enables and starts memcached.service
# (127.0.0.1:11211) when it is installed. A policy-rc.d that answers 101
# ("action forbidden") is in place for the duration of the apt-get run, so no
# service is started by it; the unit stays enabled and starts at the next
# boot (`systemctl disable --now memcached` if that machine does not want it).
# An existing policy-rc.d (container images ship one) is left alone.
# Not a package manager: nothing is upgraded or removed on purpose.
set -eu

missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
[ -n "$missing" ] || exit 0

line="apt-get update && apt-get install -y$missing"
if [ "$(id -u)" -eq 0 ]; then
	if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ]; then
		echo "k2mc: make is running as root through sudo, so what it builds in build/ is" \
			"root's; run make as yourself: it calls sudo for apt-get alone" >&2
	fi
	as_root=""
elif command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
	as_root="sudo"
else
	echo "k2mc: these Debian packages are missing:$missing" >&2
	echo "k2mc: run this as root, then make again:" >&2
	echo "    $line" >&2
	exit 1
fi

echo "installing:$missing"
# The script below runs as root; the package names are its arguments.
# shellcheck disable=SC2086,SC2016
if ! $as_root sh -c '
	set -e
	p=/usr/sbin/policy-rc.d
	if [ ! -e "$p" ]; then
		printf "#!/bin/sh\n# k2mc contrib/apt-deps.sh: no service starts during its apt-get run\nexit 101\n" >"$p"
		chmod 0755 "$p"
		trap "rm -f \"$p\"" EXIT
		trap "exit 130" INT TERM HUP
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
' k2mc-apt-deps $missing; then
	echo "k2mc: installing failed; as root, run:" >&2
	echo "    $line" >&2
	exit 1
fi
