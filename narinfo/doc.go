// Package narinfo reads and writes Nix .narinfo files, the per-path metadata
// of a binary cache, tolerantly.
//
// It exists because go-nix's narinfo.Parse refuses any key it does not know
// and any value containing a second ": ", while Nix itself skips unknown keys.
// This project adds an IPFSHash line (the CID of the NAR) to every narinfo it
// publishes; stock Nix clients keep working because they ignore it, and our
// own tools must read it back, along with whatever other extensions other
// caches add. So Parse keeps unknown keys in Extra, in order, and String
// writes them back.
//
// String writes the fields in the order of Nix's NarInfo::to_string
// (libstore/nar-info.cc) so that a narinfo Nix wrote survives a parse and
// rewrite byte for byte:
//
//	StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize,
//	References (always, "References: " when empty), Deriver, System,
//	Sig (one line each), CA
//
// followed by our IPFSHash and IPFSSig lines and then the unknown keys. A
// signature covers only StorePath, NarHash, NarSize and References (see
// Fingerprint), so adding lines never invalidates a Sig.
//
// IPFSSig is the publisher's signature, with its Nix cache key, of the
// binding "this CID holds this NAR" (CIDFingerprint): a different,
// domain-separated fingerprint, so neither signature can stand for the
// other. Nix ignores the line like IPFSHash; the substituter trusts a CID it
// verifies to stream at once (docs/SUBSTITUTER.md).
//
// Parse checks syntax only (lines, duplicates, numbers, required keys);
// Validate checks what Nix would refuse or what could not be signed. A
// narinfo from outside should pass both before anything acts on it.
package narinfo
