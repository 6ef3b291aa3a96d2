#!/usr/bin/env bash
# make demo: the whole story on this machine, with real parts. Installs what
# is missing first (Debian's nix-bin, kubo from its Go module source), saying
# so, then runs demo/ (see its package comment) and exits 0 only if every
# step held.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(scripts/install-deps.sh | tail -1)"
export PATH="$tools:$PATH"
# Static, so they run unchanged in the Nix 2.26 chroot (-nix-root).
CGO_ENABLED=0 go build -o bin/ ./cmd/nix-ipfs-hook ./cmd/nix-ipfs
exec go run ./demo -bin bin "$@"
