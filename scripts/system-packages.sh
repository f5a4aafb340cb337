#!/usr/bin/env bash
# Install (as root, with apt) the Debian packages boundary and its tests use; a no-op for what is present.
# Usage: scripts/system-packages.sh PKG...
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
export DEBIAN_FRONTEND=noninteractive
missing=$(for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
