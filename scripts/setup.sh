#!/bin/bash
# setup.sh — make a machine ready to develop and test usenetsync (idempotent; any cwd).
#
# Target: fresh Debian 12, run as root, Python 3.11 as `python3`, only the PyPI and Debian
# package registries reachable.  Steps:
#   1. a project virtual environment .venv at the repo root (`python3 -m venv`; Debian needs the
#      python3-venv package for it, installed when missing) and `pip install -e '.[test]'` into it:
#      the system interpreter is never touched (no --break-system-packages, PEP 668);
#   2. zsh, fish, groff and man, which the docs tests use to check the man page and completions;
#   3. scripts/inn-up.sh: install, configure and start INN 2.7 on 127.0.0.1 (119/1190/563).
# Afterwards run the tool as .venv/bin/usenetsync and the tests as `.venv/bin/python -m pytest -q`.
# Only steps 2 and 3 need root (apt-get, ports < 1024); the tool itself does not.
# Never prints credentials: pip's output is only shown on failure, inn-up.sh prints no password.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

log=$(mktemp /tmp/usenetsync-setup.XXXXXX)
trap 'rm -f "$log"' EXIT
fail() { echo "setup.sh: $1 failed; output follows" >&2; tail -n 60 "$log" >&2; exit 1; }

# A venv left half-made (no pip) by an earlier failed run is made again.
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >"$log" 2>&1; then
    # Debian's python3 ships venv without ensurepip; python3-venv provides it.
    rm -rf "$VENV"
    { apt-get update -qq && apt-get install -y -q --no-install-recommends python3-venv; } >"$log" 2>&1 \
      || fail "installing python3-venv"
    "$PYTHON" -m venv "$VENV" >"$log" 2>&1 || fail "$PYTHON -m venv .venv"
  fi
fi
# setuptools at pyproject.toml's build floor lets tests/test_packaging.py build the wheel offline.
"$VENV/bin/python" -m pip install -q -e "$ROOT[test]" "setuptools>=77" >"$log" 2>&1 \
  || fail "pip install -e '.[test]' into .venv"

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
echo "$("$VENV/bin/usenetsync" --version) in .venv: run .venv/bin/usenetsync, test with .venv/bin/python -m pytest -q"
