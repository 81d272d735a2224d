#!/usr/bin/env bash
# The main job, end to end, on a local default: index the sample folder into a
# throw-away home and show the state. (Run `bash scripts/setup.sh` first; the
# README's one-liner does both.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export USENETSYNC_HOME="${USENETSYNC_HOME:-$(mktemp -d /tmp/usenetsync-demo.XXXXXX)}"
echo "== home: $USENETSYNC_HOME" >&2
echo "== usenetsync index examples/sample" >&2
usenetsync index "$here/sample"
echo "== usenetsync index examples/sample (again: nothing changed)" >&2
usenetsync index "$here/sample"
echo "== usenetsync status" >&2
usenetsync status
