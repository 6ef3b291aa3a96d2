package ipfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/client/rpc"
	"github.com/ipfs/kubo/core/coreiface/options"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// Node is how another kubo node can be reached: its peer ID and its
// addresses as multiaddrs without the /p2p/<id> suffix.
type Node struct {
	PeerID string
	Addrs  []string
}

// Kubo is a client of one kubo daemon's RPC API. It is safe for concurrent
// use. It holds no connection: every call dials the daemon afresh, so a
// Kubo survives daemon restarts.
type Kubo struct {
	addr  string // what Dial resolved, for messages
	ep    endpoint
	api   *rpc.HttpApi
	fetch *rpc.HttpApi // Fetch's: connections kept (Dial)
}

// dialTimeout bounds only the TCP connect: once connected, a call may
// legitimately run for minutes (a pin fetching gigabytes), so the caller's
// context is the only limit on the rest.
const dialTimeout = 10 * time.Second

// ResolveAPI returns the address Dial(api) would use: an http(s) URL, or a
// /unix/ multiaddr for a unix socket. api is an http(s) URL, a host:port, a
// multiaddr such as /ip4/127.0.0.1/tcp/5001, or "" for the address a
// running daemon wrote to $IPFS_PATH/api (~/.ipfs/api by default), which is
// where the ipfs CLI looks too.
func ResolveAPI(api string) (string, error) {
	ep, err := resolve(api)
	if err != nil {
		return "", err
	}
	if ep.unix != "" {
		return "/unix" + ep.unix, nil
	}
	return ep.url, nil
}

type endpoint struct {
	url  string // base URL, without /api/v0
	unix string // socket path when the API listens on a unix socket
	repo string // the repository whose api file named it, if one did
}

func resolve(api string) (endpoint, error) {
	api = strings.TrimSpace(api)
	switch {
	case api == "":
		return resolveRepo()
	case strings.HasPrefix(api, "/"):
		return resolveMultiaddr(api, "")
	case strings.Contains(api, "://"):
		u, err := url.Parse(api)
		if err != nil {
			return endpoint{}, errs.Errorf(errs.Invalid, "kubo API %q: %w", api, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return endpoint{}, errs.Errorf(errs.Invalid, "kubo API %q: scheme %q is not http or https", api, u.Scheme)
		}
		if u.Host == "" {
			return endpoint{}, errs.Errorf(errs.Invalid, "kubo API %q: no host", api)
		}
		// People paste the full endpoint they see in kubo's docs.
		p := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v0")
		return endpoint{url: u.Scheme + "://" + u.Host + p}, nil
	default:
		if _, _, err := net.SplitHostPort(api); err != nil {
			return endpoint{}, errs.Errorf(errs.Invalid, "kubo API %q: not a URL, host:port or multiaddr: %w", api, err)
		}
		return endpoint{url: "http://" + api}, nil
	}
}

func resolveRepo() (endpoint, error) {
	dir := os.Getenv("IPFS_PATH")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return endpoint{}, errs.Errorf(errs.Invalid, "kubo API: no address given, IPFS_PATH unset and no home directory: %w", err)
		}
		dir = filepath.Join(home, ".ipfs")
	}
	file := filepath.Join(dir, "api")
	b, err := os.ReadFile(file)
	if err != nil {
		// The daemon writes the file when it starts and removes it when it
		// stops, so a missing file almost always means no daemon runs.
		return endpoint{}, errs.Errorf(errs.Transient,
			"kubo API: no address given and cannot read %s (is `ipfs daemon` running with IPFS_PATH=%s? or pass the API address): %w",
			file, dir, err)
	}
	ep, err := resolveMultiaddr(strings.TrimSpace(string(b)), file)
	ep.repo = dir
	return ep, err
}

func resolveMultiaddr(s, from string) (endpoint, error) {
	where := ""
	if from != "" {
		where = " (read from " + from + ")"
	}
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return endpoint{}, errs.Errorf(errs.Invalid, "kubo API multiaddr %q%s: %w", s, where, err)
	}
	network, host, err := manet.DialArgs(a)
	if err != nil {
		return endpoint{}, errs.Errorf(errs.Invalid, "kubo API multiaddr %q%s: %w", s, where, err)
	}
	if network == "unix" {
		return endpoint{url: "http://unix", unix: host}, nil
	}
	scheme := "http"
	for _, p := range a.Protocols() {
		if p.Code == ma.P_HTTPS || p.Code == ma.P_TLS {
			scheme = "https"
		}
	}
	return endpoint{url: scheme + "://" + host}, nil
}

// Dial returns a client of the kubo RPC API at api (see ResolveAPI). It does
// not contact the daemon, so it succeeds while the daemon is down; use Ping
// to check it.
func Dial(api string) (*Kubo, error) {
	ep, err := resolve(api)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: dialTimeout,
		// A pooled connection to a daemon that has since restarted fails
		// the next POST, which Go does not replay; dialling per call costs
		// a loopback handshake and makes restarts invisible (the rpc
		// client's own default does the same).
		DisableKeepAlives: true,
	}
	addr := ep.dialVia(tr, dialer)
	client, err := rpc.NewURLApiWithClient(ep.url, &http.Client{Transport: tr})
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "kubo API %s: %w", addr, err)
	}
	// Fetch's calls come by the thousand (a substituter's warm), where a
	// connection each cost kubo and the caller 66 µs of CPU more a call:
	// they keep their connections, and say they may be replayed, so that
	// Go sends one again on a fresh connection when a pooled one turns
	// out dead (a daemon restarted).
	ftr := tr.Clone()
	ftr.DisableKeepAlives, ftr.MaxIdleConnsPerHost = false, 128
	ep.dialVia(ftr, dialer)
	fetch, err := rpc.NewURLApiWithClient(ep.url, &http.Client{Transport: ftr})
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "kubo API %s: %w", addr, err)
	}
	return &Kubo{addr: addr, ep: ep, api: client, fetch: fetch}, nil
}

// dialVia points tr at ep: through d, and over ep's unix socket when it
// has one. It returns ep's address for logs.
func (ep endpoint) dialVia(tr *http.Transport, d *net.Dialer) string {
	tr.DialContext = d.DialContext
	if ep.unix == "" {
		return ep.url
	}
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", ep.unix)
	}
	return "/unix" + ep.unix
}

// String is the API address, for logs.
func (k *Kubo) String() string { return k.addr }

type addEvent struct {
	Name string
	Hash string
}

// Add imports r as one unixfs file with parameters p, streaming it to the
// daemon, and returns its CID. pin pins it recursively as part of the add,
// so it is never exposed to a garbage collection in between.
func (k *Kubo) Add(ctx context.Context, r io.Reader, p Params, pin bool) (cid.Cid, error) {
	if p.Nocopy {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add: nocopy needs a file the daemon can read: use AddFile")
	}
	src := &sourceReader{r: r}
	return k.add(ctx, files.NewReaderFile(src), src, p, pin, "stream")
}

// AddFile imports the regular file at name. With p.Nocopy the daemon records
// the file's absolute path instead of copying its blocks, so the path must
// mean the same file to the daemon; see the package comment.
func (k *Kubo) AddFile(ctx context.Context, name string, p Params, pin bool) (cid.Cid, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add %s: %w", name, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		kind := errs.Transient
		if errors.Is(err, os.ErrNotExist) {
			kind = errs.Invalid
		}
		return cid.Undef, errs.Errorf(kind, "ipfs add: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return cid.Undef, errs.Errorf(errs.Transient, "ipfs add: %w", err)
	}
	if !st.Mode().IsRegular() {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add %s: not a regular file (%s)", abs, st.Mode().Type())
	}
	return k.addAt(ctx, f, abs, st, p, pin)
}

// AddAt imports r as the contents of the regular file name. With p.Nocopy
// the daemon records name and each block's offset in r instead of
// copying the blocks, and does not open name during the add (kubo 0.42:
// boxo's filestore.FileManager only checks that name is under its root).
// So a writer can send a file's bytes to kubo while it writes them, and
// move the file to name afterwards: one pass over the bytes instead of
// writing the file and reading it back. Until name holds r's bytes, the
// CID's leaves cannot be read. A file of one chunk is the exception: kubo
// reads its root, the leaf itself, back during the add, so name must
// already hold it. Without p.Nocopy it is Add.
func (k *Kubo) AddAt(ctx context.Context, r io.Reader, name string, p Params, pin bool) (cid.Cid, error) {
	if !p.Nocopy {
		return k.Add(ctx, r, p, pin)
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add %s: %w", name, err)
	}
	return k.addAt(ctx, r, abs, nil, p, pin)
}

func (k *Kubo) addAt(ctx context.Context, r io.Reader, abs string, st os.FileInfo, p Params, pin bool) (cid.Cid, error) {
	src := &sourceReader{r: r}
	// The path travels in the part's abspath header; kubo's filestore keys
	// its references on it.
	node, err := files.NewReaderPathFile(abs, io.NopCloser(src), st)
	if err != nil {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add %s: %w", abs, err)
	}
	c, err := k.add(ctx, node, src, p, pin, abs)
	if err != nil && p.Nocopy && errs.Is(err, errs.Transient) && ctx.Err() == nil {
		if first := src.firstByte(); first != nil {
			if perr := k.probeNocopy(ctx, first, abs, p); perr != nil {
				return cid.Undef, perr
			}
		}
	}
	return c, err
}

// probeNocopy finds out why a nocopy add broke off. kubo refuses a nocopy
// add (filestore disabled, file outside its root) after reading only the
// start of the body, answers, and closes the connection while we are still
// sending; the HTTP client then usually reports the reset instead of the
// answer, which would pass for a flaky daemon and be retried forever. The
// same add of the file's first byte is small enough to be read whole, so
// its answer arrives. If the daemon accepts it, it has a legitimate,
// unpinned filestore reference to that byte, and the original error
// stands.
func (k *Kubo) probeNocopy(ctx context.Context, first []byte, abs string, p Params) error {
	src := &sourceReader{r: bytes.NewReader(first)}
	node, err := files.NewReaderPathFile(abs, io.NopCloser(src), nil)
	if err != nil {
		return nil
	}
	_, err = k.add(ctx, node, src, p, false, abs)
	if err != nil && !errs.Is(err, errs.Transient) {
		return err
	}
	return nil
}

func (k *Kubo) add(ctx context.Context, f files.Node, src *sourceReader, p Params, pin bool, what string) (cid.Cid, error) {
	if err := p.Validate(); err != nil {
		return cid.Undef, fmt.Errorf("ipfs add %s: %w", what, err)
	}
	if !p.Kubo() {
		return cid.Undef, errs.Errorf(errs.Invalid, "ipfs add %s: kubo has no chunker %s: build the DAG with nardag and import it (nardag.Import)", what, p.Chunker)
	}
	// The empty name is how the rpc client sends a single unwrapped file;
	// the daemon then adds it without a directory around it.
	body := files.NewMultiFileReader(files.NewMapDirectory(map[string]files.Node{"": f}), false, false)
	// The raw builder rather than Unixfs().Add: that one cannot send
	// max-file-links or an explicit trickle=false, and it fetches the
	// daemon's version under its own 30 s context instead of ctx.
	req := applyParams(p, k.api.Request("add")).
		Option("pin", pin).
		Option("progress", false).
		Option("quieter", true).
		Body(body)
	fail := func(err error) (cid.Cid, error) {
		if serr := src.err(); serr != nil && ctx.Err() == nil {
			// The daemon did not fail: our source did, and its error (and
			// kind, if it has one) is the one that matters.
			return cid.Undef, fmt.Errorf("ipfs add %s: reading input: %w", what, serr)
		}
		return cid.Undef, k.failStream(ctx, err, "add %s (%s)", what, p)
	}
	resp, err := req.Send(ctx)
	if err != nil {
		return fail(err)
	}
	if resp.Error != nil {
		return fail(resp.Error)
	}
	defer resp.Close()
	var last string
	dec := json.NewDecoder(resp.Output)
	for {
		var ev addEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fail(err)
		}
		if ev.Hash != "" {
			last = ev.Hash
		}
	}
	if last == "" {
		return fail(errors.New("daemon answered without a CID"))
	}
	c, err := cid.Decode(last)
	if err != nil {
		return fail(fmt.Errorf("daemon answered with CID %q: %w", last, err))
	}
	return c, nil
}

// sourceReader remembers the caller's read error, because the HTTP client
// reports it as a failed request, which would otherwise pass for a daemon
// failure.
type sourceReader struct {
	r     io.Reader
	mu    sync.Mutex
	bad   error
	first []byte // the first byte read, for probeNocopy
}

func (s *sourceReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n > 0 || (err != nil && err != io.EOF) {
		s.mu.Lock()
		if s.first == nil && n > 0 {
			s.first = []byte{b[0]}
		}
		if err != nil && err != io.EOF {
			s.bad = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *sourceReader) firstByte() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

func (s *sourceReader) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad
}

func needCID(op string, c cid.Cid) error {
	if !c.Defined() {
		return errs.Errorf(errs.Invalid, "ipfs %s: undefined CID", op)
	}
	return nil
}

// Pin pins c recursively under name and returns once every block of the
// DAG is local: fetched from peers if needed, so the caller's context is the
// only bound on how long that takes.
func (k *Kubo) Pin(ctx context.Context, c cid.Cid, name string) error {
	if err := needCID("pin", c); err != nil {
		return err
	}
	opts := []options.PinAddOption{options.Pin.Recursive(true)}
	if name != "" {
		opts = append(opts, options.Pin.Name(name))
	}
	return k.fail(ctx, k.api.Pin().Add(ctx, path.FromCid(c), opts...), "pin %s", c)
}

// PinProgress is Pin, calling progress whenever kubo reports more of the
// DAG fetched (`pin add --progress`, twice a second), so that a caller
// tells a moving pin from a stalled one (mirror.Pinner's stall guard).
func (k *Kubo) PinProgress(ctx context.Context, c cid.Cid, name string, progress func()) error {
	if err := needCID("pin", c); err != nil {
		return err
	}
	resp, err := k.api.Request("pin/add", c.String()).Option("recursive", true).Option("progress", true).
		Option("name", name).Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return k.fail(ctx, err, "pin %s", c)
	}
	defer resp.Close()
	dec, last := json.NewDecoder(resp.Output), 0
	for {
		var out struct{ Progress int }
		if err := dec.Decode(&out); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return k.failStream(ctx, err, "pin %s", c)
		}
		if out.Progress > last {
			last = out.Progress
			progress()
		}
	}
}

// IsPinned reports whether c is pinned recursively. A CID that is only
// indirectly pinned (inside another pinned DAG) is not: unpinning the
// parent would expose it to the next garbage collection.
func (k *Kubo) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	if err := needCID("pin ls", c); err != nil {
		return false, err
	}
	_, ok, err := k.api.Pin().IsPinned(ctx, path.FromCid(c), options.Pin.IsPinned.Recursive())
	if err != nil {
		return false, k.fail(ctx, err, "pin ls %s", c)
	}
	return ok, nil
}

// Unpin removes c's recursive pin. It is idempotent: a CID that is not
// pinned is not an error, so a retried unpin succeeds.
func (k *Kubo) Unpin(ctx context.Context, c cid.Cid) error {
	if err := needCID("pin rm", c); err != nil {
		return err
	}
	err := k.api.Pin().Rm(ctx, path.FromCid(c), options.Pin.RmRecursive(true))
	var ce *rpc.Error
	if errors.As(err, &ce) && strings.Contains(ce.Message, "not pinned") {
		return nil
	}
	return k.fail(ctx, err, "pin rm %s", c)
}

// Pins lists the recursive pins.
func (k *Kubo) Pins(ctx context.Context) ([]cid.Cid, error) {
	// The rpc client's Pin().Ls dereferences a nil body when the daemon
	// answers with an error, so this goes through the raw builder.
	resp, err := k.api.Request("pin/ls").
		Option("type", "recursive").
		Option("stream", true).
		Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "pin ls")
	}
	defer resp.Close()
	var out []cid.Cid
	dec := json.NewDecoder(resp.Output)
	for {
		var ev struct{ Cid string }
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, k.failStream(ctx, err, "pin ls")
		}
		c, err := cid.Decode(ev.Cid)
		if err != nil {
			return nil, fmt.Errorf("kubo %s: pin ls: daemon listed CID %q: %w", k.addr, ev.Cid, err)
		}
		out = append(out, c)
	}
}

// RepoGC runs a garbage collection and returns when it has finished.
func (k *Kubo) RepoGC(ctx context.Context) error {
	// silent: the daemon would otherwise stream every removed CID to us.
	err := k.api.Request("repo/gc").Option("silent", true).Exec(ctx, nil)
	return k.fail(ctx, err, "repo gc")
}

// Cat streams the content of the unixfs file c. Blocks missing locally are
// fetched from peers as the reader reaches them; ctx bounds the whole read.
func (k *Kubo) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	if err := needCID("cat", c); err != nil {
		return nil, err
	}
	resp, err := k.api.Request("cat", path.FromCid(c).String()).Option("progress", false).Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "cat %s", c)
	}
	return &catReader{ctx: ctx, k: k, c: c, r: resp.Output}, nil
}

type catReader struct {
	ctx context.Context
	k   *Kubo
	c   cid.Cid
	r   io.ReadCloser
}

func (r *catReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		err = r.k.failStream(r.ctx, err, "cat %s", r.c)
	}
	return n, err
}

func (r *catReader) Close() error { return r.r.Close() }

// Size returns the size in bytes of the unixfs file c.
func (k *Kubo) Size(ctx context.Context, c cid.Cid) (uint64, error) {
	if err := needCID("files stat", c); err != nil {
		return 0, err
	}
	var st struct {
		Type string
		Size uint64
	}
	err := k.api.Request("files/stat", path.FromCid(c).String()).Exec(ctx, &st)
	if err != nil {
		return 0, k.fail(ctx, err, "files stat %s", c)
	}
	if st.Type != "file" {
		return 0, errs.Errorf(errs.Invalid, "kubo %s: %s is a unixfs %s, not a file", k.addr, c, st.Type)
	}
	return st.Size, nil
}

// Self returns the daemon's peer ID and the addresses it announces, which is
// what another node needs to Connect to it.
func (k *Kubo) Self(ctx context.Context) (Node, error) {
	var out struct {
		ID        string
		Addresses []string
	}
	if err := k.api.Request("id").Exec(ctx, &out); err != nil {
		return Node{}, k.fail(ctx, err, "id")
	}
	n := Node{PeerID: out.ID}
	seen := map[string]bool{}
	for _, a := range out.Addresses {
		a = strings.TrimSuffix(a, "/p2p/"+out.ID)
		a = strings.TrimSuffix(a, "/ipfs/"+out.ID)
		if a != "" && !seen[a] {
			seen[a] = true
			n.Addrs = append(n.Addrs, a)
		}
	}
	return n, nil
}

// Connect opens a swarm connection to n, trying all of its addresses; with
// none, the daemon looks the peer up in its routing. Two nodes that are
// connected exchange blocks directly, without waiting for the DHT.
func (k *Kubo) Connect(ctx context.Context, n Node) error {
	if n.PeerID == "" {
		return errs.Errorf(errs.Invalid, "ipfs swarm connect: node without a peer ID")
	}
	suffix := "/p2p/" + n.PeerID
	args := make([]string, 0, len(n.Addrs))
	for _, a := range n.Addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return errs.Errorf(errs.Invalid, "ipfs swarm connect %s: address %q: %w", n.PeerID, a, err)
		}
		args = append(args, a+suffix)
	}
	if len(args) == 0 {
		args = append(args, suffix)
	}
	err := k.api.Request("swarm/connect", args...).Exec(ctx, nil)
	return k.fail(ctx, err, "swarm connect %s", n.PeerID)
}

// Ping checks that the daemon answers.
func (k *Kubo) Ping(ctx context.Context) error {
	var out struct{ ID string }
	return k.fail(ctx, k.api.Request("id").Exec(ctx, &out), "id")
}

// Block returns the block c through RPC block/get: from the daemon's store,
// or fetched from peers. Over MaxBlockSize is Invalid.
func (k *Kubo) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	if err := needCID("block get", c); err != nil {
		return nil, err
	}
	resp, err := k.api.Request("block/get", c.String()).Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "block get %s", c)
	}
	defer resp.Output.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Output, unixfs.MaxBlockSize+1))
	if err != nil {
		return nil, k.failStream(ctx, err, "block get %s", c)
	}
	if len(b) > unixfs.MaxBlockSize {
		return nil, errs.Errorf(errs.Invalid, "kubo %s: block %s is larger than %d bytes", k.addr, c, unixfs.MaxBlockSize)
	}
	return b, nil
}

// Fetch makes the daemon hold the block c, fetching it from peers if it
// lacks it, without sending its bytes over RPC (block/stat).
func (k *Kubo) Fetch(ctx context.Context, c cid.Cid) error {
	if err := needCID("block stat", c); err != nil {
		return err
	}
	var out struct{ Size int64 }
	return k.fail(ctx, k.fetch.Request("block/stat", c.String()).Header("Idempotency-Key", "block/stat").Exec(ctx, &out), "block stat %s", c)
}

var _ unixfs.Fetcher = (*Kubo)(nil)

// RPC is the daemon's RPC client, for the calls of packages beside this
// one (ipfs/warm).
func (k *Kubo) RPC() *rpc.HttpApi { return k.api }

// Checks is CheckNone: kubo checks the blocks it fetches from peers, not
// those its store already holds, unless Datastore.HashOnRead is set.
func (k *Kubo) Checks() unixfs.Check { return unixfs.CheckNone }

// Stream reads the unixfs file c from byte off: RPC cat, the first off
// bytes read and dropped (as the Reader has always resumed through RPC).
func (k *Kubo) Stream(ctx context.Context, c cid.Cid, off int64) (io.ReadCloser, error) {
	rc, err := k.Cat(ctx, c)
	if err != nil || off == 0 {
		return rc, err
	}
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		rc.Close()
		return nil, fmt.Errorf("kubo %s: cat %s: skipping to byte %d: %w", k, c, off, err)
	}
	return rc, nil
}

var (
	_ unixfs.Streamer = (*Kubo)(nil)
	_ unixfs.Streamer = (*Reader)(nil)
)
