#!/usr/bin/env bash
# make-fixtures.sh regenerates the golden .narinfo files in this directory
# with real Nix, so the package's tests compare against what Nix writes rather
# than against our reading of Nix's source.
#
# Usage: narinfo/testdata/make-fixtures.sh   (needs nix-build, nix-store, nix;
#        run as the Nix store owner; checked with Debian 12's Nix 2.8.0)
#
# What it makes:
#   test-key-1.sk, test-key-1.pk  a throwaway signing key pair (test only; it
#                                 signs nothing but these fixtures)
#   dep.narinfo       derivation output with no references
#   app.narinfo       derivation output referring to dep and to itself, so
#                     References has two sorted entries and a self-reference
#   lone.narinfo      a second derivation output with no references, signed
#                     again afterwards by `nix store sign` with test-key-2,
#                     whose name sorts after test-key-1: two Sig lines, in
#                     Nix's order
#   test-key-2.sk, test-key-2.pk  the second throwaway key
#   hello-ca.narinfo  a path added with `nix-store --add` (content-addressed:
#                     CA line, no Deriver)
#   dep-xz.narinfo    dep again, copied to a cache with compression=xz, so
#                     FileHash/FileSize differ from NarHash/NarSize
# All were written by `nix copy --to file://...?secret-key=...` and signed by
# Nix with test-key-1. Nothing here needs nixpkgs or the network: every Nix
# command is given `--option substituters ''` so it never waits on
# cache.nixos.org.
#
# Running it again replaces every file above (new key, new signatures; store
# paths stay the same because the derivations are fixed).
#
# Another Nix version's fixtures (in a subdirectory, named by version):
#
#   narinfo/testdata/make-fixtures.sh --nix-root ~/.cache/nix-ipfs/nix-trixie \
#       --keys narinfo/testdata narinfo/testdata/nix-2.26
#
# runs every Nix command inside that chroot (Debian trixie's Nix 2.26, made by
# scripts/install-deps.sh; as root) and writes to the directory given, signing
# with the keys already in --keys instead of new ones, so the two versions'
# files can be compared byte for byte.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here"
root=""
keys=""
while [ $# -gt 0 ]; do
  case "$1" in
  --nix-root) root=$(cd "$2" && pwd); shift 2 ;;
  --keys) keys=$(cd "$2" && pwd); shift 2 ;;
  --inside) shift ;; # internal: already in the chroot
  *) mkdir -p "$1"; out=$(cd "$1" && pwd); shift ;;
  esac
done

if [ -n "$root" ]; then
  # Again, inside the chroot (a private mount namespace, as
  # internal/chroot does), the host's /tmp at the same path.
  xfer=$(mktemp -d)
  trap 'rm -rf "$xfer"' EXIT
  cp "$0" "$xfer/make-fixtures.sh"
  [ -n "$keys" ] && cp "$keys"/test-key-*.sk "$keys"/test-key-*.pk "$xfer/"
  unshare --mount --propagation private sh -euc '
    root="$1"; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /tmp "$root/tmp"
    exec chroot "$root" "$@"' sh "$root" \
    bash "$xfer/make-fixtures.sh" --inside ${keys:+--keys "$xfer"} "$xfer/out"
  mkdir -p "$out"
  cp "$xfer"/out/*.narinfo "$out/"
  [ -z "$keys" ] && cp "$xfer"/out/test-key-* "$out/"
  echo "wrote fixtures to $out:"
  ls -l "$out"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nixopts=(--option substituters '')
echo "with $(nix-build --version)"

if [ -n "$keys" ]; then
  cp "$keys/test-key-1.sk" "$tmp/sk"; cp "$keys/test-key-1.pk" "$tmp/pk"
  cp "$keys/test-key-2.sk" "$tmp/sk2"; cp "$keys/test-key-2.pk" "$tmp/pk2"
else
  nix-store --generate-binary-cache-key test-key-1 "$tmp/sk" "$tmp/pk"
  nix-store --generate-binary-cache-key test-key-2 "$tmp/sk2" "$tmp/pk2"
fi

cat >"$tmp/fixtures.nix" <<'NIX'
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  };
  dep = mk "nix-ipfs-fixture-dep" "echo hi > $out";
in {
  inherit dep;
  app = mk "nix-ipfs-fixture-app" "echo ${dep} $out > $out";
  lone = mk "nix-ipfs-fixture-lone" "mkdir -p $out/bin && echo 'echo lone' > $out/bin/lone";
}
NIX

build() { nix-build "${nixopts[@]}" --no-out-link "$tmp/fixtures.nix" -A "$1"; }
dep=$(build dep)
app=$(build app)
lone=$(build lone)
printf 'hello, content-addressed world\n' >"$tmp/nix-ipfs-fixture-hello.txt"
hello=$(nix-store "${nixopts[@]}" --add "$tmp/nix-ipfs-fixture-hello.txt")

copy() { # copy <compression> <dest> <paths...>
  local comp=$1 dest=$2
  shift 2
  nix --extra-experimental-features nix-command copy "${nixopts[@]}" \
    --to "file://$dest?compression=$comp&secret-key=$tmp/sk" "$@"
}
copy none "$tmp/cache" "$dep" "$app" "$lone" "$hello"
copy xz "$tmp/cache-xz" "$dep"
# Signing in the file cache (not the local store) rewrites the narinfo with
# Nix's own writer and leaves no signature behind in /nix/var/nix/db.
nix --extra-experimental-features nix-command store sign "${nixopts[@]}" \
  --store "file://$tmp/cache" -k "$tmp/sk2" "$lone"

narinfo() { # narinfo <cache dir> <store path>
  local base
  base=$(basename "$2")
  printf '%s/%s.narinfo' "$1" "${base%%-*}"
}
mkdir -p "$out"
cp "$(narinfo "$tmp/cache" "$dep")" "$out/dep.narinfo"
cp "$(narinfo "$tmp/cache" "$app")" "$out/app.narinfo"
cp "$(narinfo "$tmp/cache" "$lone")" "$out/lone.narinfo"
cp "$(narinfo "$tmp/cache" "$hello")" "$out/hello-ca.narinfo"
cp "$(narinfo "$tmp/cache-xz" "$dep")" "$out/dep-xz.narinfo"
if [ -z "$keys" ]; then
  cp "$tmp/sk" "$out/test-key-1.sk"
  cp "$tmp/pk" "$out/test-key-1.pk"
  cp "$tmp/sk2" "$out/test-key-2.sk"
  cp "$tmp/pk2" "$out/test-key-2.pk"
  chmod 644 "$out"/test-key-*.sk # test keys, meant to be committed
fi

echo "wrote fixtures to $out:"
ls -l "$out"
