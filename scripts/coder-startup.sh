#!/usr/bin/env bash
# A Coder workspace startup script (or any non-interactive setup): installs boundary for this user, writes
# ~/.config/boundary/config.yaml from variables, checks `boundary doctor` and prints the command that starts
# the agent jailed. No root, no prompt; running it again changes nothing unless an input changed.
#
# Variables (all optional):
#   BOUNDARY_ALLOWLIST  allow rules, separated by ';' or newlines ("api.github.com;domain=.npmjs.org method=GET")
#   BOUNDARY_AGENT      codex | claude | gemini | opencode (its API hosts and state directory; see README)
#   BOUNDARY_PRESETS    comma-separated presets: npm, pypi, github
#   BOUNDARY_JAIL_TYPE  auto (default) | nsjail | landjail
#   BOUNDARY_VENV, BOUNDARY_BIN  where install.sh puts the venv and the link (default ~/.local/share/boundary/venv,
#                       ~/.local/bin)
# Exit status: 0 when boundary is installed, configured and a jail mode works here; 1 otherwise (with why).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${BOUNDARY_VENV:-$HOME/.local/share/boundary/venv}
bindir=${BOUNDARY_BIN:-$HOME/.local/bin}
conf_dir=${XDG_CONFIG_HOME:-$HOME/.config}/boundary
conf=$conf_dir/config.yaml
marker="# written by boundary's scripts/coder-startup.sh; edits are replaced on the next start"
say() { printf 'boundary setup: %s\n' "$*" >&2; }

# 1. install, only when the source differs from what is installed
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3) || { say "no python3: cannot install"; exit 1; }
stamp=$("$py" - "$here" <<'EOF'
import hashlib, pathlib, sys
root = pathlib.Path(sys.argv[1])
h = hashlib.sha256()
for p in sorted([root / "pyproject.toml", *root.glob("jail/**/*"), *root.glob("proxy/**/*")]):
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc"):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
print(h.hexdigest())
EOF
)
if [ -x "$bindir/boundary" ] && [ "$(cat "$venv/.boundary-source" 2>/dev/null)" = "$stamp" ]; then
  say "boundary is installed and current ($("$bindir/boundary" --version))"
else
  BOUNDARY_VENV=$venv BOUNDARY_BIN=$bindir "$here/scripts/install.sh"
  printf '%s\n' "$stamp" >"$venv/.boundary-source"
fi

# 2. the config file, from the variables (a file of the user's own, without the marker, is left alone)
new=$("$py" - <<'EOF'
import json, os, re
rules = [r.strip() for r in re.split(r"[;\n]", os.environ.get("BOUNDARY_ALLOWLIST", "")) if r.strip()]
presets = [p.strip() for p in os.environ.get("BOUNDARY_PRESETS", "").split(",") if p.strip()]
lines = ["allowlist:" + ("" if rules else " []"), *(f"  - {json.dumps(r)}" for r in rules)]
if os.environ.get("BOUNDARY_AGENT"):
    lines.append(f"agent: {json.dumps(os.environ['BOUNDARY_AGENT'].strip())}")
if presets:
    lines.append(f"presets: {json.dumps(presets)}")
if os.environ.get("BOUNDARY_JAIL_TYPE"):
    lines.append(f"jail_type: {json.dumps(os.environ['BOUNDARY_JAIL_TYPE'].strip())}")
print("\n".join(lines))
EOF
)
new="$marker
$new"
mkdir -p "$conf_dir"
if [ -f "$conf" ] && ! grep -qxF "$marker" "$conf"; then
  say "$conf exists and was not written by this script: left as it is (delete it to have it written)"
elif [ -f "$conf" ] && [ "$(cat "$conf")" = "$new" ]; then
  say "config unchanged: $conf"
else
  printf '%s\n' "$new" >"$conf.tmp.$$"
  mv "$conf.tmp.$$" "$conf"
  say "config written: $conf"
fi

# 3. the check: a jail mode works here, with this config
if ! "$bindir/boundary" doctor >/dev/null 2>&1; then
  say "boundary doctor found no jail mode that works here:"
  "$bindir/boundary" doctor >&2 || true
  exit 1
fi
"$bindir/boundary" explain --config "$conf" example.invalid:443 >/dev/null 2>&1 || [ $? = 1 ] ||
  { say "the config does not load:"; "$bindir/boundary" explain --config "$conf" example.invalid:443 >&2; exit 1; }

# 4. how to start the agent jailed
cmd=${BOUNDARY_AGENT:-your-agent}
say "ready: start the agent jailed with: $bindir/boundary run -- $cmd"
