#!/bin/sh
# image-root.sh OUT: the nix-ipfs image's whole file system, written to OUT.
# The Dockerfile's build stage runs it and the image is OUT on top of
# `FROM scratch`; integration/compose_docker_test.go runs the same script on
# the host to build the image where no base image can be pulled.
#
#   - nix-ipfs and nix-ipfs-hook, static (CGO_ENABLED=0): nothing else to load
#   - CA certificates, for NATS or an upstream cache over TLS
#   - /etc/passwd and /etc/group with root and nix-ipfs (uid/gid 999)
#   - /tmp, where the substituter holds NARs while it checks them
set -eu
out="${1:?usage: image-root.sh OUT}"
cd "$(dirname "$0")/.."
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
CGO_ENABLED=0 go build -o "$out/usr/local/bin/" ./cmd/nix-ipfs ./cmd/nix-ipfs-hook
cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnix-ipfs:x:999:999:nix-ipfs:/var/lib/nix-ipfs:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnix-ipfs:x:999:\n' >"$out/etc/group"
chmod 1777 "$out/tmp"
