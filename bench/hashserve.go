package main

import (
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// hashingCache serves a binary cache directory over HTTP as `nix-ipfs
// serve` does, except that every NAR is read through user space and hashed
// (SHA-256) as it is sent, in the substituter's read size, instead of going
// out with sendfile. It does nothing else: no IPFS, no spool, no check of
// the sum. It is the floor of section 4: the cost any server that checks a
// NAR against its NarHash before the last byte goes out cannot avoid, on
// this machine, beside Nix's own work.
type hashingCache struct{ dir string }

func (h hashingCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := filepath.Clean("/" + r.URL.Path)
	if !strings.HasPrefix(name, "/nar/") || !strings.HasSuffix(name, ".nar") {
		http.ServeFile(w, r, filepath.Join(h.dir, name))
		return
	}
	f, err := os.Open(filepath.Join(h.dir, name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-nix-nar")
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	sum := sha256.New()
	buf := make([]byte, 256<<10) // the substituter's spoolBuf
	for {
		n, err := f.Read(buf)
		if n > 0 {
			sum.Write(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}
}

// serveHashing starts hashingCache on dir at a free loopback address,
// stopped at the end of the scope, and returns its URL.
func serveHashing(s *scope, dir string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "listen")
	srv := &http.Server{Handler: hashingCache{dir}}
	go srv.Serve(l)
	s.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}
