#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs
# ruff, mypy and pytest. As root it creates an unprivileged user and runs
# everything that touches the code as that user (jail tests must never need root).
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TEST_USER=${BOUNDARY_TEST_USER:-boundary-test}

log() { printf '[test.sh] %s\n' "$*" >&2; }

# real root (uid 0 of the initial user namespace), not root in a namespace made by `unshare -r`, which can
# neither install packages nor add users: it runs the suite as it is
real_root() {
  [ "$(id -u)" = 0 ] && awk '$1 == 0 && $2 == 0 && $3 == 4294967295 { ok = 1 } END { exit !ok }' /proc/self/uid_map
}

if real_root; then
  log "installing system packages"
  "$here/scripts/system-packages.sh" python3 python3-venv python3-dev gcc libc6-dev curl ca-certificates iptables \
    nftables dnsutils iproute2 util-linux libseccomp2 git tmux musl-tools libssl-dev
  # the e2e tests run npm and npx: Debian's, unless the machine already has a node of its own
  command -v npm >/dev/null 2>&1 || "$here/scripts/system-packages.sh" nodejs npm
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    log "creating unprivileged user $TEST_USER"
    useradd --create-home --shell /bin/bash "$TEST_USER"
  fi
  # the clone may sit under a directory the test user cannot enter: test a copy it owns
  work=/var/tmp/boundary-test
  rm -rf "$work/src"
  mkdir -p "$work"
  chown "$TEST_USER:" "$work"
  cp -a "$here" "$work/src"
  rm -rf "$work/src/.venv"
  chown -R "$TEST_USER:" "$work/src"
  log "running the suite as $TEST_USER"
  exec runuser -u "$TEST_USER" -- env -i \
    HOME="$(getent passwd "$TEST_USER" | cut -d: -f6)" USER="$TEST_USER" LOGNAME="$TEST_USER" \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 CI="${CI:-}" \
    bash "$work/src/scripts/test.sh" "$@"
fi

cd "$here"
# what the suite runs, by the Debian package that brings it (installed above when run as root)
missing=""
for need in python3:python3 gcc:gcc musl-gcc:musl-tools curl:curl git:git tmux:tmux node:nodejs npm:npm \
  nft:nftables iptables-restore:iptables; do
  command -v "${need%%:*}" >/dev/null 2>&1 || missing="$missing ${need#*:}"
done
[ -e /usr/include/openssl/ssl.h ] || missing="$missing libssl-dev"
if [ -n "$missing" ]; then
  log "missing:$missing (run scripts/test.sh as root once, or: apt-get install$missing)"
  exit 1
fi
venv=${BOUNDARY_TEST_VENV:-$here/.venv}
# Debian's interpreter: any user can run it (a pyenv under /root cannot be)
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  "$py" -m venv "$venv"
fi
log "installing boundary and dev tools"
"$venv/bin/pip" install -q --disable-pip-version-check -e ".[dev]"

log "ruff"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
log "mypy --strict"
"$venv/bin/mypy"
log "pytest as $(id -un) (uid $(id -u))"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  log "pytest collected no tests: failing"
  exit 1
fi
exit "$rc"
