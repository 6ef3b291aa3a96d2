# The nix-ipfs image: both binaries on a small Debian. The publisher needs
# the host's /nix/store and Nix database mounted read-only (docker-compose.yml).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/nix-ipfs ./cmd/nix-ipfs-hook

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/nix-ipfs nix-ipfs
COPY --from=build /out/nix-ipfs /out/nix-ipfs-hook /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/nix-ipfs"]
CMD ["help"]
