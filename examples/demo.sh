#!/usr/bin/env bash
# The main job, end to end, on a local default: back up the sample folder to
# the local INN on 127.0.0.1:119 (which `bash scripts/setup.sh` installs and
# starts; the README's one-liner runs both), share it, and download it as a
# second user into another folder, then compare byte for byte; finally restore
# the backup on a "new machine" that has only the publisher's recovery phrase.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d /tmp/usenetsync-demo.XXXXXX)"
say() { printf '\n== %s\n' "$*" >&2; }
as() { local who=$1; shift; USENETSYNC_HOME="$work/$who" usenetsync "$@"; }

say "publisher: add the local server and an identity key (no passphrase: a demo)"
as alice server add local --host 127.0.0.1 --port 119 --group alt.binaries.test
as alice keys init --no-passphrase
say "publisher: index, share, upload (the share index is published when the upload completes)"
as alice index "$here/sample"
as alice share create "$here/sample" --public --name sample
as alice upload "$here/sample"
as alice upload "$here/sample"   # again: nothing to do
say "reader: a second user with only the share ID downloads it (handed over on stdin, never on a command line)"
as bob server add local --host 127.0.0.1 --port 119 --group alt.binaries.test
as alice share show sample --show-id | as bob download - "$work/restored"
say "compare"
diff -r --exclude=.usenetsync "$here/sample" "$work/restored"
echo "OK: $work/restored is byte-identical to examples/sample" >&2
as alice status
say "disaster: alice's machine is gone; a new one with only her 24-word recovery phrase lists and restores her backup"
(umask 077; as alice keys phrase > "$work/phrase")
as carol server add local --host 127.0.0.1 --port 119 --group alt.binaries.test
as carol keys restore --phrase-file "$work/phrase" --no-passphrase
as carol backups
as carol restore sample "$work/recovered"
diff -r "$here/sample" "$work/recovered"
echo "OK: $work/recovered, restored from the phrase alone, is byte-identical to examples/sample" >&2
