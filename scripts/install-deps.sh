#!/usr/bin/env bash
# install-deps.sh: install what nix-ipfs's tests, demo and benchmarks need on
# a fresh Debian machine, and nothing that is already there.
#
#   - Debian's nix-bin (Nix 2.8.0, single-user as root) when nix-build is missing
#   - kubo (the `ipfs` daemon) built from its Go module source, because
#     `go install github.com/ipfs/kubo/cmd/ipfs@...` is refused by the module
#     proxy (replace/exclude directives). The binary is cached under
#     $NIX_IPFS_TOOLS (default ~/.cache/nix-ipfs/bin) so a second run is instant.
#   - with --nix-2.26 (make test passes it): a second, current Nix, Debian
#     trixie's nix-bin (Nix 2.26) in a chroot made by debootstrap from the
#     Debian mirror apt already uses, cached as a directory
#     ($NIX_IPFS_TRIXIE_ROOT, default ~/.cache/nix-ipfs/nix-trixie). As root
#     only (chroot and mount need it); about 2 minutes once.
#   - nats-server (go install), for the tests and benchmarks that run a
#     three-node JetStream cluster and a leaf node as real processes; cached
#     in the same directory.
#
# Prints the directory holding `ipfs` on its last line of stdout so callers can
# put it on PATH:  export PATH="$(scripts/install-deps.sh | tail -1):$PATH"
#
# Each install step says one line on stderr; what apt-get and go print goes
# to $NIX_IPFS_DEPS_LOG (default ~/.cache/nix-ipfs/install-deps.log), whose
# last lines are shown when a step fails.
set -euo pipefail

KUBO_VERSION="${KUBO_VERSION:-v0.42.0}"
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-v2.15.2}"
TOOLS="${NIX_IPFS_TOOLS:-$HOME/.cache/nix-ipfs/bin}"
mkdir -p "$TOOLS"

say() { echo "install-deps: $*" >&2; }

# --nix-2.26: also the second Nix the tests run against (make test asks).
want_trixie=
for arg in "$@"; do
	case "$arg" in
	--nix-2.26) want_trixie=1 ;;
	*) echo "usage: $0 [--nix-2.26]" >&2; exit 2 ;;
	esac
done

LOG="${NIX_IPFS_DEPS_LOG:-$(dirname "$TOOLS")/install-deps.log}"

# step WHAT COMMAND...: run COMMAND with its output in $LOG, and say WHAT
# and how it ended on one line. COMMAND runs where set -e does not reach (an
# if condition): the functions below check each command themselves.
step() {
	local what="$1" start=$SECONDS rc
	shift
	printf 'install-deps: %s ...' "$what" >&2
	printf '\n=== %s: %s (%s)\n' "$what" "$*" "$(date -u +%FT%TZ)" >>"$LOG"
	if "$@" >>"$LOG" 2>&1; then
		printf ' done (%ds)\n' $((SECONDS - start)) >&2
	else
		rc=$?
		printf ' failed (exit %d); the end of %s:\n' "$rc" "$LOG" >&2
		tail -n 40 "$LOG" | sed 's/^/    /' >&2
		exit "$rc"
	fi
}

apt_updated=
# apt_install PACKAGE...: Debian packages, the package lists fetched once.
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [ -z "$apt_updated" ]; then
		apt-get update -q || return
		apt_updated=1
	fi
	apt-get install -y -q "$@"
}

if ! command -v nix-build >/dev/null 2>&1; then
	step "nix-build not found: installing Debian's nix-bin (apt-get)" apt_install nix-bin
fi

# nix-bin on Debian runs single-user as root; make sure the store exists.
if [ ! -d /nix/store ]; then
	mkdir -p /nix/store /nix/var/nix
fi

# Other tools the integration tests use: iproute2 (netns), procps;
# patchelf for the upgrade workload (internal/upgradeload) of the upgrade
# test and bench.
for pkg in procps:pkill patchelf:patchelf; do
	p="${pkg%%:*}"; c="${pkg##*:}"
	if ! command -v "$c" >/dev/null 2>&1; then
		step "$c not found: installing Debian's $p" apt_install "$p"
	fi
done

# The Debian mirror apt uses (deb822 .sources or one-line .list), for
# debootstrap; the security archive has no trixie base system.
debian_mirror() {
	local m
	m="$( (sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n';
		sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null) |
		grep -v -- '-security' | grep -m1 '/debian/\{0,1\}$' || true)"
	echo "${m:-http://deb.debian.org/debian}"
}

# In a private mount namespace: what is mounted for the chroot (/proc, /dev)
# disappears with the last process in it, so a crash or a kill leaves no
# mount behind on the host, and a second run starts clean.
in_chroot() {
	local root="$1"
	shift
	unshare --mount --propagation private sh -euc '
		root="$1"; shift
		mount -t proc proc "$root/proc"
		mount --rbind /dev "$root/dev"
		exec chroot "$root" /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$root" "$@"
}

TRIXIE="${NIX_IPFS_TRIXIE_ROOT:-$(dirname "$TOOLS")/nix-trixie}"
if [ -n "$want_trixie" ] && [ "$(id -u)" -ne 0 ]; then
	say "not root: no Nix 2.26 chroot (chroot and mount need root); its tests skip outside CI"
elif [ -n "$want_trixie" ] && [ ! -x "$TRIXIE/usr/bin/nix-build" ]; then
	mirror="$(debian_mirror)"
	say "no Nix 2.26 chroot at $TRIXIE: making one (debootstrap trixie from $mirror, then Debian's nix-bin; about 2 minutes)"
	export DEBIAN_FRONTEND=noninteractive
	if ! command -v debootstrap >/dev/null 2>&1; then
		step "debootstrap not found: installing Debian's debootstrap" apt_install debootstrap
	fi
	# Built beside its final place and renamed when complete, so a run that
	# died half-way is started over, never taken for done. A leftover is
	# removed without crossing into any other filesystem (and, every mount
	# having been private, none can be left in it).
	work="$TRIXIE.partial"
	if [ -e "$work" ]; then
		say "removing $work, left by an interrupted run"
		rm -rf --one-file-system "$work"
	fi
	mkdir -p "$work"
	step "debootstrap trixie" unshare --mount --propagation private \
		debootstrap --variant=minbase trixie "$work" "$mirror"
	# No service starts inside the chroot.
	printf '#!/bin/sh\nexit 101\n' > "$work/usr/sbin/policy-rc.d"
	chmod +x "$work/usr/sbin/policy-rc.d"
	step "installing nix-bin in the chroot" in_chroot "$work" sh -c 'apt-get update -q && apt-get install -y -q nix-bin'
	# As on the host: single-user as root, no sandbox, no substituters
	# (the tests pass these as options too).
	mkdir -p "$work/etc/nix"
	printf 'build-users-group =\nsandbox = false\nsubstituters =\n' > "$work/etc/nix/nix.conf"
	mv "$work" "$TRIXIE"
fi
if [ -n "$want_trixie" ] && [ -x "$TRIXIE/usr/bin/nix-build" ] && [ "$(id -u)" -eq 0 ]; then
	say "nix (chroot $TRIXIE): $(in_chroot "$TRIXIE" nix-build --version)"
fi

# The compose test (integration/compose_docker_test.go): a Docker engine
# (Debian's docker.io), Debian's docker-compose 1.29, and what its stand-in
# for the ipfs/kubo image holds besides kubo (busybox for the image's shell
# entrypoint, gosu, tini). Nothing here starts a daemon: the test starts its
# own dockerd, in a network namespace of its own.
for pkg in docker.io:dockerd docker-compose:docker-compose busybox:busybox gosu:gosu tini:tini-static; do
	p="${pkg%%:*}"; c="${pkg##*:}"
	if ! command -v "$c" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$c" ]; then
		step "$c not found: installing Debian's $p" apt_install "$p"
	fi
done

# nats-server of the release the nats:2.11 image in docker-compose.yml
# holds, for the compose test's stand-in of that image (only under its
# versioned name: it is not the nats-server other tests run).
COMPOSE_NATS_VERSION="${COMPOSE_NATS_VERSION:-v2.11.17}"
compose_nats="$TOOLS/nats-server-$COMPOSE_NATS_VERSION"
if [ ! -x "$compose_nats" ]; then
	step "nats-server $COMPOSE_NATS_VERSION not cached: go install, static (about a minute)" \
		env GOBIN="$TOOLS/.gobin-compose" CGO_ENABLED=0 go install "github.com/nats-io/nats-server/v2@$COMPOSE_NATS_VERSION"
	mv "$TOOLS/.gobin-compose/nats-server" "$compose_nats"
	rmdir "$TOOLS/.gobin-compose"
fi

ipfs_bin="$TOOLS/ipfs-$KUBO_VERSION"
build_kubo() {
	local dir work
	dir="$(go mod download -json "github.com/ipfs/kubo@$KUBO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	if [ -z "$dir" ]; then
		echo "could not download github.com/ipfs/kubo@$KUBO_VERSION from the Go module proxy"
		return 1
	fi
	work="$(mktemp -d)" || return
	cp -r "$dir/." "$work/src" && chmod -R u+w "$work/src" &&
		(cd "$work/src" && GOFLAGS=-mod=mod go build -trimpath -o "$ipfs_bin.tmp" ./cmd/ipfs)
	local rc=$?
	rm -rf "$work"
	return $rc
}
if [ ! -x "$ipfs_bin" ]; then
	step "kubo $KUBO_VERSION not cached: building it from its Go module source (about 2 minutes)" build_kubo
	mv "$ipfs_bin.tmp" "$ipfs_bin"
fi
ln -sf "$ipfs_bin" "$TOOLS/ipfs"
say "ipfs: $("$TOOLS/ipfs" version)"

nats_bin="$TOOLS/nats-server-$NATS_SERVER_VERSION"
install_nats() {
	local gobin
	gobin="$(mktemp -d)" || return
	GOBIN="$gobin" go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" &&
		mv "$gobin/nats-server" "$nats_bin"
	local rc=$?
	rm -rf "$gobin"
	return $rc
}
if [ ! -x "$nats_bin" ]; then
	step "nats-server $NATS_SERVER_VERSION not cached: go install github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" install_nats
fi
ln -sf "$nats_bin" "$TOOLS/nats-server"
say "nats-server: $("$TOOLS/nats-server" --version)"
say "nix: $(nix-build --version)"
echo "$TOOLS"
