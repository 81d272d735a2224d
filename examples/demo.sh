#!/usr/bin/env bash
# The main job, end to end, on a local default: index the sample folder into a
# throw-away home and upload it to the local INN on 127.0.0.1:119 (which
# `bash scripts/setup.sh` installs and starts; the README's one-liner runs both).
# Every article is confirmed with STAT before the upload reports success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export USENETSYNC_HOME="${USENETSYNC_HOME:-$(mktemp -d /tmp/usenetsync-demo.XXXXXX)}"
say() { printf '\n== %s\n' "$*" >&2; }
say "home: $USENETSYNC_HOME"
say "usenetsync server add local --host 127.0.0.1 --port 119 --group alt.binaries.test"
usenetsync server add local --host 127.0.0.1 --port 119 --group alt.binaries.test --replace
usenetsync server test local
say "usenetsync index examples/sample"
usenetsync index "$here/sample"
say "usenetsync upload examples/sample"
usenetsync upload "$here/sample"
say "usenetsync upload examples/sample (again: everything is already up)"
usenetsync upload "$here/sample"
say "usenetsync status"
usenetsync status
