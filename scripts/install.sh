#!/usr/bin/env bash
# Install boundary non-interactively: a venv with boundary in it, linked into ~/.local/bin.
# As root it also installs the system packages the jail modes use; as an ordinary user it says what it could
# not install and what that costs (nothing it needs: nsjail applies its firewall rules over netlink itself).
# Env: BOUNDARY_VENV (default ~/.local/share/boundary/venv), BOUNDARY_BIN (default ~/.local/bin).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${BOUNDARY_VENV:-$HOME/.local/share/boundary/venv}
bindir=${BOUNDARY_BIN:-$HOME/.local/bin}
say() { printf 'boundary install: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && awk '$1 == 0 && $2 == 0 && $3 == 4294967295 { ok = 1 } END { exit !ok }' /proc/self/uid_map
then
  "$here/scripts/system-packages.sh" python3 python3-venv gcc libc6-dev curl ca-certificates iptables nftables \
    iproute2 libseccomp2
else
  command -v gcc >/dev/null 2>&1 ||
    say "no C compiler (Debian: gcc libc6-dev): landjail runs without its connect shim (name lookups take a DNS round trip through boundary; nothing is less confined)"
  command -v nft >/dev/null 2>&1 || command -v iptables-restore >/dev/null 2>&1 ||
    say "no nft or iptables (Debian: nftables iptables): nsjail uses its own netlink back end; nothing is lost"
  [ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libseccomp.so.2 ] ||
    [ -e /lib/x86_64-linux-gnu/libseccomp.so.2 ] || ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 ||
    say "no libseccomp (Debian: libseccomp2): boundary cannot run any jail; ask an administrator to install it"
fi
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3) || { say "no python3 (Debian: python3): cannot install"; exit 1; }
if [ ! -x "$venv/bin/python" ] && ! "$py" -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv"
  say "python3 cannot make a venv (Debian: python3-venv); ask an administrator to install it, then run this again"
  exit 1
fi
"$venv/bin/pip" install -q --disable-pip-version-check "$here"
mkdir -p "$bindir"
ln -sfn "$venv/bin/boundary" "$bindir/boundary"
echo "boundary installed: $bindir/boundary ($("$venv/bin/boundary" --version))"
