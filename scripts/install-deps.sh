#!/usr/bin/env bash
# install-deps.sh: install what nix-ipfs's demo, tests and benchmarks need on
# a fresh Debian machine, and nothing that is already there. Each install
# says on screen what it is for.
#
#   --demo      only what `make demo` runs: Debian's nix-bin (Nix 2.8.0,
#               single-user as root) when nix-build is missing, and kubo
#               (the `ipfs` daemon). NATS is embedded in `nix-ipfs up`.
#   (default)   also what the tests need (make test, make bench):
#               nats-server for the NATS cluster and leaf tests and the
#               compose test's stand-in of the nats image; a Docker engine,
#               docker-compose, busybox, gosu and tini for the compose test;
#               chromium for the status page's browser test; prometheus
#               (with promtool) for the metrics and alert tests.
#   --nix-2.26  (make test passes it) also a second, current Nix, Debian
#               trixie's nix-bin (Nix 2.26) in a chroot made by debootstrap
#               from the Debian mirror apt already uses, cached as a
#               directory ($NIX_IPFS_TRIXIE_ROOT, default
#               ~/.cache/nix-ipfs/nix-trixie). As root only (chroot and
#               mount need it); about 2 minutes once.
#
# kubo is built from its Go module source, because `go install
# github.com/ipfs/kubo/cmd/ipfs@...` is refused by the module proxy
# (replace/exclude directives); it and nats-server are cached under
# $NIX_IPFS_TOOLS (default ~/.cache/nix-ipfs/bin) so a second run is instant.
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

# --demo: only the demo's needs; --nix-2.26: also the second Nix the
# tests run against (make test asks).
want_trixie=
want_tests=1
for arg in "$@"; do
	case "$arg" in
	--nix-2.26) want_trixie=1 ;;
	--demo) want_tests= ;;
	*) echo "usage: $0 [--demo | --nix-2.26]" >&2; exit 2 ;;
	esac
done
if [ -z "$want_tests" ] && [ -n "$want_trixie" ]; then
	echo "$0: --demo and --nix-2.26 exclude each other" >&2
	exit 2
fi

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
	step "nix-build not found: for the builds of the demo and the tests, installing Debian's nix-bin (apt-get)" apt_install nix-bin
fi

# nix-bin on Debian runs single-user as root; make sure the store exists.
if [ ! -d /nix/store ]; then
	mkdir -p /nix/store /nix/var/nix
fi

# test_tool PACKAGE COMMAND WHY: Debian's PACKAGE when COMMAND is missing,
# for the tests only (not --demo).
test_tool() {
	local p="$1" c="$2" why="$3"
	if [ -n "$want_tests" ] && ! command -v "$c" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$c" ]; then
		step "$c not found: $why, installing Debian's $p" apt_install "$p"
	fi
}
test_tool procps pkill "for the fault tests"
test_tool patchelf patchelf "for the upgrade workload (internal/upgradeload) of the upgrade test and bench"

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
test_tool docker.io dockerd "for the compose test's Docker engine"
test_tool docker-compose docker-compose "for the compose test"
test_tool busybox busybox "for the compose test's kubo image (its shell)"
test_tool gosu gosu "for the compose test's kubo image"
test_tool tini tini-static "for the compose test's kubo image"
# The status page's browser test (integration/statuspage_test.go) and the
# metrics tests (integration/prometheus_test.go).
test_tool chromium chromium "for the status page's browser test"
test_tool prometheus prometheus "for the metrics and alert tests (with promtool)"

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
	step "kubo $KUBO_VERSION not cached: the IPFS node of the demo and the tests, building it from its Go module source (about 2 minutes)" build_kubo
	mv "$ipfs_bin.tmp" "$ipfs_bin"
fi
ln -sf "$ipfs_bin" "$TOOLS/ipfs"
say "ipfs: $("$TOOLS/ipfs" version)"

# One nats-server, the release go.mod embeds, static so that the compose
# test's stand-in of the nats image (FROM scratch) runs it as it is.
nats_bin="$TOOLS/nats-server-$NATS_SERVER_VERSION"
install_nats() {
	local gobin
	gobin="$(mktemp -d)" || return
	GOBIN="$gobin" CGO_ENABLED=0 go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" &&
		mv "$gobin/nats-server" "$nats_bin"
	local rc=$?
	rm -rf "$gobin"
	return $rc
}
# A cached one from before it was built static (it names the dynamic
# loader) is built again.
static() { ! grep -qa -e '/lib64/ld-linux' -e '/lib/ld-linux' "$1"; }
if [ -n "$want_tests" ]; then
	if [ ! -x "$nats_bin" ] || ! static "$nats_bin"; then
		step "nats-server $NATS_SERVER_VERSION not cached (static): for the NATS cluster, leaf and compose tests, go install" install_nats
	fi
	ln -sf "$nats_bin" "$TOOLS/nats-server"
	say "nats-server: $("$TOOLS/nats-server" --version)"
fi
say "nix: $(nix-build --version)"
echo "$TOOLS"
