#!/usr/bin/env bash
# install-deps.sh: install what nix-ipfs's tests, demo and benchmarks need on
# a fresh Debian machine, and nothing that is already there.
#
#   - Debian's nix-bin (Nix 2.8.0, single-user as root) when nix-build is missing
#   - kubo (the `ipfs` daemon) built from its Go module source, because
#     `go install github.com/ipfs/kubo/cmd/ipfs@...` is refused by the module
#     proxy (replace/exclude directives). The binary is cached under
#     $NIX_IPFS_TOOLS (default ~/.cache/nix-ipfs/bin) so a second run is instant.
#
# Prints the directory holding `ipfs` on its last line of stdout so callers can
# put it on PATH:  export PATH="$(scripts/install-deps.sh | tail -1):$PATH"
set -euo pipefail

KUBO_VERSION="${KUBO_VERSION:-v0.42.0}"
TOOLS="${NIX_IPFS_TOOLS:-$HOME/.cache/nix-ipfs/bin}"
mkdir -p "$TOOLS"

say() { echo "install-deps: $*" >&2; }

if ! command -v nix-build >/dev/null 2>&1; then
	say "nix-build not found: installing Debian's nix-bin (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq nix-bin >&2
fi

# nix-bin on Debian runs single-user as root; make sure the store exists.
if [ ! -d /nix/store ]; then
	mkdir -p /nix/store /nix/var/nix
fi

# Other tools the integration tests use: iproute2 (netns), procps.
for pkg in procps:pkill; do
	p="${pkg%%:*}"; c="${pkg##*:}"
	if ! command -v "$c" >/dev/null 2>&1; then
		say "$c not found: installing Debian's $p"
		apt-get install -y -qq "$p" >&2
	fi
done

ipfs_bin="$TOOLS/ipfs-$KUBO_VERSION"
if [ ! -x "$ipfs_bin" ]; then
	say "kubo $KUBO_VERSION not cached: building it from its Go module source (about 2 minutes)"
	dir="$(go mod download -json "github.com/ipfs/kubo@$KUBO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	if [ -z "$dir" ]; then
		say "could not download github.com/ipfs/kubo@$KUBO_VERSION from the Go module proxy"
		exit 1
	fi
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	cp -r "$dir/." "$work/src"
	chmod -R u+w "$work/src"
	(cd "$work/src" && GOFLAGS=-mod=mod go build -trimpath -o "$ipfs_bin.tmp" ./cmd/ipfs) >&2
	mv "$ipfs_bin.tmp" "$ipfs_bin"
fi
ln -sf "$ipfs_bin" "$TOOLS/ipfs"
say "ipfs: $("$TOOLS/ipfs" version)"
say "nix: $(nix-build --version)"
echo "$TOOLS"
