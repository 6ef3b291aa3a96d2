# The nix-ipfs image: both binaries, static, on nothing else (FROM scratch:
# no shell, no package manager). scripts/image-root.sh writes the image's
# whole file system; the publisher needs the host's /nix/store and Nix
# database mounted (docker-compose.yml).
#
# It runs as nix-ipfs (uid/gid 65532), never root. COPY --from keeps the
# owners image-root.sh gave, so /data/cache is nix-ipfs's, and Docker
# copies that owner into an empty volume mounted there (docker-compose.yml).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN scripts/image-root.sh /out

FROM scratch
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/nix-ipfs"]
CMD ["help"]
