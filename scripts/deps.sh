#!/bin/sh
# deps.sh — install the Debian packages imapgate needs to build and test.
#
# Quiet when everything is present. As root, missing packages are installed
# with apt-get (after one "apt-get update"), with a temporary
# /usr/sbin/policy-rc.d that forbids starting services, so installing
# dovecot, postfix, imapproxy or redis-server never starts a system daemon.
# Postfix is preseeded to "No configuration" (no /etc/postfix/main.cf, no
# questions): the tests run private instances (Redis too) with their own
# config directory. Not root: prints the command to run and exits 1.
#
# "deps.sh deb": only what "make deb" needs (the package's Build-Depends and
# dpkg-buildpackage). The full list has them too, for tests/e2e/test_deb.py.
set -u

DEB_PACKAGES="libssl-dev libsqlite3-dev libhiredis-dev debhelper dpkg-dev"
PACKAGES="$DEB_PACKAGES libcmocka-dev python3 python3-pytest
dovecot-core dovecot-imapd dovecot-pop3d postfix clang libclang-rt-14-dev imapproxy openssl fail2ban curl
php-cli roundcube-core roundcube-sqlite3 redis-server"
if [ "${1:-}" = deb ]; then
	PACKAGES=$DEB_PACKAGES
fi

installed() {
	case "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" in
	*" ok installed") return 0 ;;
	*) return 1 ;;
	esac
}

missing=""
# A C compiler and make: build-essential, unless gcc and make are already there.
if ! installed build-essential; then
	if ! { installed gcc && installed make; }; then
		missing="build-essential"
	fi
fi
for p in $PACKAGES; do
	installed "$p" || missing="$missing $p"
done
missing=${missing# }

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: $missing" >&2
	echo "deps.sh: run as root:" >&2
	echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $missing" >&2
	exit 1
fi

echo "deps.sh: installing: $missing" >&2

POLICY=/usr/sbin/policy-rc.d
SAVED=""
if [ -e "$POLICY" ]; then
	SAVED="$POLICY.imapgate-deps.$$"
	mv "$POLICY" "$SAVED" || exit 1
fi
# shellcheck disable=SC2317 # called through trap
cleanup() {
	rm -f "$POLICY"
	if [ -n "$SAVED" ]; then
		mv "$SAVED" "$POLICY"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
printf '#!/bin/sh\n# written by imapgate scripts/deps.sh: start no service\nexit 101\n' >"$POLICY" || exit 1
chmod 755 "$POLICY" || exit 1

export DEBIAN_FRONTEND=noninteractive
# Debian's default answer is "Internet Site", which writes a system main.cf
# and aliases; the tests need none of it. Only asked on a first install.
case " $missing " in
*" postfix "*)
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ||
		{ echo "deps.sh: debconf-set-selections failed" >&2; exit 1; } ;;
esac
apt-get update || { echo "deps.sh: apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086 # word splitting of the package list is wanted
apt-get install -y $missing || { echo "deps.sh: apt-get install failed" >&2; exit 1; }

# Verify: a package name that apt resolved to something else must not pass silently.
still=""
for p in $missing; do
	installed "$p" || still="$still $p"
done
if [ -n "$still" ]; then
	echo "deps.sh: still missing after install:$still" >&2
	exit 1
fi
exit 0
