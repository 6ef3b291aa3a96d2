package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// upstream is the cache narinfos come from, and NARs when IPFS cannot
// provide them: an http(s) base URL or a directory (file://).
type cache struct {
	desc   string // for logs
	base   *url.URL
	client *http.Client
	own    bool     // client was made here: its idle connections are closed with it
	root   *os.Root // file:// upstreams only
}

func newCache(raw string, client *http.Client, timeout time.Duration) (*cache, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "upstream %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, errs.Errorf(errs.Invalid, "upstream %q: no host", raw)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, errs.Errorf(errs.Invalid, "upstream %q: a query or fragment cannot be part of a cache URL", raw)
		}
		own := client == nil
		if own {
			client = defaultUpstreamClient(timeout)
		}
		b := *u
		b.Path = strings.TrimRight(b.Path, "/")
		b.RawPath = ""
		return &cache{desc: b.String(), base: &b, client: client, own: own}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, errs.Errorf(errs.Invalid, "upstream %q: file URL with host %q (want file:///dir)", raw, u.Host)
		}
		if u.Path == "" {
			return nil, errs.Errorf(errs.Invalid, "upstream %q: no directory", raw)
		}
		root, err := os.OpenRoot(u.Path)
		if err != nil {
			return nil, errs.Errorf(errs.Invalid, "upstream %q: %w", raw, err)
		}
		return &cache{desc: "file://" + u.Path, root: root}, nil
	default:
		return nil, errs.Errorf(errs.Invalid, "upstream %q: scheme must be http, https or file", raw)
	}
}

// defaultUpstreamClient bounds every phase of a request that can hang
// without bounding a whole transfer, which for a large NAR legitimately
// takes minutes: the body is bounded by the idle watchdog instead.
func defaultUpstreamClient(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   32,
		// Nix decompresses NARs itself; a transparent gzip layer would
		// hide the real length and bytes from the NarHash check.
		DisableCompression: true,
	}}
}

func (u *cache) close() {
	if u.root != nil {
		u.root.Close()
	}
	if u.own {
		// Their connections' goroutines would outlive the cache.
		u.client.CloseIdleConnections()
	}
}

// upResponse is an upstream answer. Status is 200 or 404 for a file://
// upstream; an http upstream's status is passed on as it came.
type Response struct {
	Status int
	Length int64 // -1 when unknown
	Header http.Header
	Body   io.ReadCloser // never nil; empty for HEAD
}

// get fetches rel (a path that passed classify, without its leading
// slash) with the client's query appended for an http upstream. A transport
// failure is an error; any HTTP status is a response.
func (u *cache) get(ctx context.Context, method, rel, rawQuery string, hdr http.Header) (*Response, error) {
	if u.root != nil {
		return u.getFile(method, rel)
	}
	t := *u.base
	t.Path = u.base.Path + "/" + rel
	t.RawQuery = rawQuery
	req, err := http.NewRequestWithContext(ctx, method, t.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", t.String(), err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "nix-ipfs-substituter")
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, errs.Errorf(errs.Transient, "upstream %s %s: %w", method, t.String(), err)
	}
	return &Response{Status: resp.StatusCode, Length: resp.ContentLength, Header: resp.Header, Body: resp.Body}, nil
}

func (u *cache) getFile(method, rel string) (*Response, error) {
	notFound := &Response{Status: http.StatusNotFound, Length: 0, Header: http.Header{}, Body: http.NoBody}
	f, err := u.root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound, nil
	}
	if err != nil {
		return nil, errs.Errorf(errs.Transient, "upstream %s/%s: %w", u.desc, rel, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, errs.Errorf(errs.Transient, "upstream %s/%s: %w", u.desc, rel, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return notFound, nil
	}
	r := &Response{Status: http.StatusOK, Length: st.Size(), Header: http.Header{}, Body: f}
	if method == http.MethodHead {
		f.Close()
		r.Body = http.NoBody
	}
	return r, nil
}
