#!/usr/bin/env bash
# Install boundary non-interactively: a venv with boundary in it, linked into ~/.local/bin.
# As root it also installs the system packages the jail modes use.
# Env: BOUNDARY_VENV (default ~/.local/share/boundary/venv), BOUNDARY_BIN (default ~/.local/bin).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${BOUNDARY_VENV:-$HOME/.local/share/boundary/venv}
bindir=${BOUNDARY_BIN:-$HOME/.local/bin}
"$here/scripts/system-packages.sh" python3 python3-venv gcc libc6-dev curl ca-certificates iptables nftables \
  iproute2 libseccomp2
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$here"
mkdir -p "$bindir"
ln -sfn "$venv/bin/boundary" "$bindir/boundary"
echo "boundary installed: $bindir/boundary ($("$venv/bin/boundary" --version))"
