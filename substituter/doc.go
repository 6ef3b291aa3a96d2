// Package substituter is an HTTP binary cache that stock Nix uses as a
// substituter: it serves an upstream cache's nix-cache-info and narinfos
// untouched, and each NAR from IPFS when the narinfo names one (IPFSHash),
// checked against the narinfo's signed NarHash and NarSize, with the upstream
// NAR as the fallback.
//
// # Where each NAR comes from
//
// Nix asks for /<hashpart>.narinfo, then for the narinfo's URL
// (nar/<filehash>.nar). Every narinfo served is remembered by its URL, so a
// NAR request can be matched with the NarHash, NarSize, Compression and
// IPFSHash it must agree with. A NAR whose narinfo is unknown (never served,
// or forgotten), compressed, or without an IPFSHash is proxied from upstream.
//
// Otherwise the NAR is read from IPFS into a spool file (unlinked at once,
// so nothing outlives the process), hashed as it streams, and sent only
// once its size and SHA-256 match the narinfo: bytes that fail the check
// are never sent at all, and the request falls back to the upstream NAR
// instead. That read starts when the narinfo is served (package spool:
// Nix asks for a closure's narinfos first) and is shared by every request
// for the NAR. A CID trusted to hold its NAR (proved before, or its binding signed
// by a trusted key: trust.go) is read the same way, but its requests
// follow the read as the file fills (follow.go), the last bytes held back
// until the whole matched, with the rest from upstream if IPFS fails
// half-way. docs/SUBSTITUTER.md explains why verify-before-send was chosen
// over streaming with an abort. IPFS is a kubo daemon's RPC API
// (which checks blocks itself) or a trustless HTTP gateway (see Gateway,
// which checks every block against its CID).
//
// The upstream fallback streams (it is the last resort, so there is nothing
// to gain by spooling it), still hashed when the NAR is uncompressed: on a
// mismatch the last bytes are held back and the connection is cut, so Nix
// sees a truncated transfer, never a complete wrong one. The upstream is a
// set of caches, the origin and its mirrors, with failover between them
// (package upstream); the kubo is kept peered with the mirrors the cache
// lists (package peering, StartPeering).
//
// # What is never served
//
// Only GET and HEAD of /nix-cache-info, /<32 nix32 chars>.narinfo and
// /nar/<52 nix32 chars>.nar[.xz|.zst|.bz2] are answered; any other path,
// including every encoded or traversing variant, is refused before anything
// touches upstream or the disk. A file:// upstream is opened through an
// os.Root, so even a path that passed the check could not leave it.
package substituter
