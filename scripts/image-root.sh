#!/bin/sh
# image-root.sh OUT: the nix-ipfs image's whole file system, written to OUT.
# The Dockerfile's build stage runs it and the image is OUT on top of
# `FROM scratch`; integration/compose_docker_test.go runs the same script on
# the host to build the image where no base image can be pulled.
#
#   - nix-ipfs and nix-ipfs-hook, static (CGO_ENABLED=0): nothing else to load
#   - CA certificates, for NATS or an upstream cache over TLS
#   - /etc/passwd and /etc/group with root and nix-ipfs (uid/gid 65532), the
#     user the image runs as (the Dockerfile's USER). 65532, not a uid from
#     the host's system range (100-999): a key file chowned to it on the
#     host (docker-compose.yml) must belong to no host account, and 999 is
#     often nixbld1, a Nix build user
#   - /data/cache, empty, owned by nix-ipfs: Docker copies this ownership
#     into the empty cache volume the first time a nix-ipfs container mounts
#     it, whichever container mounted it before (docs/OPERATIONS.md, Compose)
#   - /tmp, where the substituter holds NARs while it checks them
# Run it as root (the build stage is): it chowns /data/cache.
set -eu
out="${1:?usage: image-root.sh OUT}"
cd "$(dirname "$0")/.."
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/data/cache"
CGO_ENABLED=0 go build -o "$out/usr/local/bin/" ./cmd/nix-ipfs ./cmd/nix-ipfs-hook
cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnix-ipfs:x:65532:65532:nix-ipfs:/data:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnix-ipfs:x:65532:\n' >"$out/etc/group"
chmod 1777 "$out/tmp"
chmod 755 "$out/data" "$out/data/cache"
chown 65532:65532 "$out/data/cache"
