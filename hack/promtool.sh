#!/usr/bin/env bash
# promtool.sh: prints the path of promtool (Prometheus' rule checker and rule
# unit tester) on stdout, the last line; progress goes to stderr. promtool
# comes from the Debian archive's prometheus package (bookworm main): the .deb
# is fetched with `apt-get download` into a scratch directory and unpacked with
# `dpkg-deb -x`; only usr/bin/promtool is kept, in
# $TOOLS_CACHE/promtool-<Debian version>/promtool (default
# /var/cache/csi-smb/tools). The package is never installed: no daemon, no
# user, no service. PROMTOOL_DEB_VERSION pins the Debian version (default: the
# archive's candidate).
# Idempotent: when the binary is there and runs it exits at once; concurrent
# callers wait on a lock and then find the binary.
set -euo pipefail

TOOLS=${TOOLS_CACHE:-/var/cache/csi-smb/tools}

candidate() {
  apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '^(none)$' || true
}

VERSION=${PROMTOOL_DEB_VERSION:-$(candidate)}
if [[ -z "$VERSION" ]]; then
  echo "promtool: no prometheus package in the apt lists; apt-get update -qq" >&2
  apt-get update -qq >&2
  VERSION=$(candidate)
  [[ -n "$VERSION" ]] || { echo "promtool: apt knows no prometheus package (Debian 12 main has it)" >&2; exit 1; }
fi
DIR=$TOOLS/promtool-$VERSION
BIN=$DIR/promtool

cached_ok() {
  [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1
}
if cached_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR"
exec 9>"$DIR.lock"
flock 9
if cached_ok; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; as root it hands the
# download to the _apt user, which must be able to write there.
chmod 755 "$tmp"
if [[ $(id -u) -eq 0 ]] && id -u _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
cd "$tmp"
if ! apt-get download -q "prometheus=$VERSION" >&2; then
  echo "promtool: apt-get download failed; apt-get update -qq and again" >&2
  apt-get update -qq >&2
  apt-get download -q "prometheus=$VERSION" >&2
fi
deb=$(ls prometheus_*.deb)
dpkg-deb -x "$deb" root
[[ -x root/usr/bin/promtool ]] || { echo "promtool: $deb has no usr/bin/promtool" >&2; exit 1; }
cp root/usr/bin/promtool "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"

cached_ok || { echo "promtool: $BIN does not run: $("$BIN" --version 2>&1)" >&2; exit 1; }
echo "promtool: $("$BIN" --version 2>&1 | head -1) from $deb in $(($(date +%s) - start)) s" >&2
echo "$BIN"
