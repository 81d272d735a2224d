#!/bin/bash
# setup.sh — make a machine ready to develop and test usenetsync (idempotent; any cwd).
#
# Target: fresh Debian 12, run as root, Python 3.11 as `python3`, only the PyPI and Debian
# package registries reachable.  Steps:
#   1. pip install -e '.[test]' from the repo root (quiet; full pip output only on failure);
#   2. scripts/inn-up.sh: install, configure and start INN 2.7 on 127.0.0.1 (119/1190/563).
# Never prints credentials: pip's output is only shown on failure, inn-up.sh prints no password.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

log=$(mktemp /tmp/usenetsync-setup.XXXXXX)
trap 'rm -f "$log"' EXIT
fail() { echo "setup.sh: $1 failed; output follows" >&2; tail -n 60 "$log" >&2; exit 1; }

# Debian's own python3 may come without pip; the python3-pip package provides it.
if ! python3 -m pip --version >/dev/null 2>&1; then
  { apt-get update -qq && apt-get install -y -q --no-install-recommends python3-pip; } >"$log" 2>&1 \
    || fail "installing python3-pip"
fi

# Debian 12's system Python is "externally managed" (PEP 668); .ci/run calls plain `python3`,
# so the package must go into that interpreter, not a venv.
pip_args=(install -q -e "$ROOT[test]")
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  pip_args+=(--break-system-packages)
fi
python3 -m pip "${pip_args[@]}" >"$log" 2>&1 || fail "pip install -e '.[test]'"

# Tools the docs tests use to check the generated man page and completion scripts.
need=()
for tool in zsh fish groff man; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=(); for t in "${need[@]}"; do case $t in groff) pkgs+=(groff-base);; man) pkgs+=(man-db);; *) pkgs+=("$t");; esac; done
  { apt-get update -qq && apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } >"$log" 2>&1 \
    || fail "installing ${pkgs[*]}"
fi

bash "$ROOT/scripts/inn-up.sh" >"$log" 2>&1 || fail "scripts/inn-up.sh"
tail -n 1 "$log"
