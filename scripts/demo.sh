#!/usr/bin/env bash
# make demo: the whole story on this machine, with real parts. Installs only
# what the demo needs and is missing (install-deps.sh --demo: Debian's
# nix-bin, kubo from its Go module source; NATS is embedded in `nix-ipfs
# up`), one line per step saying what it is for, their output in a log
# file; then runs demo/ (see its package comment) and exits 0 only if every
# step held. `make test` installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(scripts/install-deps.sh --demo | tail -1)"
export PATH="$tools:$PATH"
log="${NIX_IPFS_DEPS_LOG:-$(dirname "$tools")/install-deps.log}"
# On a fresh machine go prints a line per module it downloads: into the log.
# Static, so the binaries run unchanged in the Nix 2.26 chroot (-nix-root).
start=$SECONDS
printf 'demo: building nix-ipfs ...' >&2
if ! CGO_ENABLED=0 go build -o bin/ ./cmd/nix-ipfs-hook ./cmd/nix-ipfs ./demo >>"$log" 2>&1; then
	printf ' failed; the end of %s:\n' "$log" >&2
	tail -n 40 "$log" | sed 's/^/    /' >&2
	exit 1
fi
printf ' done (%ds)\n' $((SECONDS - start)) >&2
exec bin/demo -bin bin "$@"
