package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// rawGet sends a request line exactly as given (no client-side cleaning of
// the path) and returns the status and up to 1 MiB of the body.
func rawGet(t *testing.T, addr, target string) (int, []byte, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, nil
}

// traversalTargets are request targets that try to leave the served tree,
// or smuggle a path past a check by encoding it.
func traversalTargets(hashPart string) []string {
	long := "/" + strings.Repeat("a/", 30000) + "x"
	return []string{
		"/../../../../etc/passwd",
		"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
		"/%252e%252e/%252e%252e/etc/passwd",
		"/nar/..%2f..%2f..%2f..%2fetc%2fpasswd",
		"/nar/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
		"/nar/..\\..\\..\\etc\\passwd",
		"/..;/..;/etc/passwd",
		"//etc/passwd",
		"/./././etc/passwd",
		"/etc/passwd",
		"/nix-cache-info/../../../../etc/passwd",
		"/nix-cache-info%00.narinfo",
		"/nix-cache-info%00",
		"/" + hashPart + ".narinfo/../../../../etc/passwd",
		"/" + hashPart + ".narinfo%2f..%2f..%2fsecret.key",
		"/../secret.key",
		"/%2e%2e/secret.key",
		"/.nix-ipfs/announced/" + hashPart,
		"/nar/../../secret.key",
		"/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/etc/passwd", // fullwidth dots
		"/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",             // overlong UTF-8 dots
		"/metrics/../../../etc/passwd",
		"/healthz/../../../../etc/passwd",
		"/debug/pprof/",
		"http://evil.invalid/../../etc/passwd",
		"/?../../etc/passwd",
		"/nix-cache-info?/../../etc/passwd",
		"/nix-ipfs-mirrors.json/../../../etc/passwd",
		"/nix-ipfs-mirrors.json%00",
		"/nar/../nix-ipfs-mirrors.json/../../secret.key",
		"*",
		long,
	}
}

// TestHostileHTTPPaths sends traversal and oddly encoded request paths to
// every HTTP endpoint the binaries serve: the publisher's and the mirror's
// metrics, `nix-ipfs serve`, and the substituter (on a file:// upstream) and
// its metrics. None serves a byte from outside what it should, none answers
// 5xx, and every one still works afterwards.
func TestHostileHTTPPaths(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	// A secret beside the cache: what traversal would be after.
	secret := "SENTINEL-" + testenv.Nonce()
	os.WriteFile(filepath.Join(filepath.Dir(a.cache), "secret.key"), []byte(secret), 0o600)
	keyBytes, _ := os.ReadFile(a.nix.SecretKey)

	pubMetrics := freeAddr(t)
	a.startPublisher(t, "--metrics-addr", pubMetrics)
	top := a.nix.Build(t, testenv.Drv("http-"+testenv.Nonce(), `echo served > $out`, ""))[0]
	flushSpool(t, a.builder)
	a.waitPublished(t, []string{top}, 2*time.Minute)
	hp := storepath.HashPart(top)

	type endpoint struct {
		name, addr, health string
	}
	eps := []endpoint{{"publisher-metrics", pubMetrics, "/healthz"}}
	nixIPFS := filepath.Join(a.bin, "nix-ipfs")
	if hasCommand(t, a.bin, "mirror") {
		m := freeAddr(t)
		testenv.StartProc(t, nixIPFS, []string{"mirror", "--name", "h", "--metrics-addr", m},
			"NIX_IPFS_NATS_URL="+a.nats.URL, "NIX_IPFS_KUBO_API="+a.kubo.API)
		eps = append(eps, endpoint{"mirror-metrics", m, "/healthz"})
	}
	if hasCommand(t, a.bin, "serve") {
		s := freeAddr(t)
		testenv.StartProc(t, nixIPFS, []string{"serve", "--cache-dir", a.cache, "--listen", s})
		eps = append(eps, endpoint{"serve", s, "/nix-cache-info"})
	}
	if hasCommand(t, a.bin, "substituter") {
		s, m := freeAddr(t), freeAddr(t)
		testenv.StartProc(t, nixIPFS, []string{"substituter", "--upstream", "file://" + a.cache, "--listen", s,
			"--kubo-api", a.kubo.API, "--metrics-addr", m})
		eps = append(eps, endpoint{"substituter", s, "/nix-cache-info"}, endpoint{"substituter-metrics", m, "/healthz"})
	}
	for _, ep := range eps {
		testenv.Eventually(t, time.Minute, ep.name+" listening", func() bool {
			code, _, err := rawGet(t, ep.addr, ep.health)
			return err == nil && code == 200
		})
	}

	passwd, _ := os.ReadFile("/etc/passwd")
	firstLine := strings.SplitN(string(passwd), "\n", 2)[0]
	tried, leaks := 0, 0
	for _, ep := range eps {
		for _, target := range traversalTargets(hp) {
			tried++
			code, body, err := rawGet(t, ep.addr, target)
			if err != nil {
				// A server may drop a request line it cannot parse; that
				// is no leak, and the health check below shows it lived.
				continue
			}
			show := target
			if len(show) > 60 {
				show = show[:60] + "..."
			}
			for _, s := range []string{firstLine, secret, strings.TrimSpace(string(keyBytes))} {
				if s != "" && bytes.Contains(body, []byte(s)) {
					leaks++
					t.Errorf("%s %s: answer %d leaks %q", ep.name, show, code, s[:min(len(s), 20)])
				}
			}
			if code >= 500 {
				t.Errorf("%s %s: status %d", ep.name, show, code)
			}
			if ep.name == "serve" || ep.name == "substituter" {
				if code == 200 && !strings.HasPrefix(target, "/nix-cache-info?") {
					t.Errorf("%s %s: served %d bytes for a path outside the cache", ep.name, show, len(body))
				}
			}
		}
		if code, _, err := rawGet(t, ep.addr, ep.health); err != nil || code != 200 {
			t.Errorf("%s: %s after the hostile requests: %d %v", ep.name, ep.health, code, err)
		}
	}
	// And the cache itself is still served where it should be, the
	// publisher's mirror list (empty: no mirror confirmed) included.
	for _, ep := range eps {
		if ep.name == "serve" || ep.name == "substituter" {
			if code, body, err := rawGet(t, ep.addr, "/"+hp+".narinfo"); err != nil || code != 200 || !bytes.Contains(body, []byte(top)) {
				t.Errorf("%s: narinfo of %s: %d %v", ep.name, top, code, err)
			}
			if code, body, err := rawGet(t, ep.addr, "/nix-ipfs-mirrors.json"); err != nil || code != 200 || !bytes.Contains(body, []byte(`"nixipfs.mirrors.v1"`)) {
				t.Errorf("%s: mirror list: %d %v %.200s", ep.name, code, err, body)
			}
		}
	}
	reliability(t, "hostile-http-paths", "runs", tried, "in", tried, "endpoints", len(eps), "lost", 0, "leaks", leaks)
}

// hostileUpstream is a binary cache that misbehaves in the ways a broken or
// malicious upstream can.
type hostileUpstream struct {
	srv     *httptest.Server
	routes  map[string]http.HandlerFunc
	written atomic.Int64 // bytes the endless handlers wrote
}

func (u *hostileUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := u.routes[r.URL.Path]; ok {
		h(w, r)
		return
	}
	http.NotFound(w, r)
}

// endless writes filler until the client goes away or cap bytes are out.
func (u *hostileUpstream) endless(limit int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		buf := bytes.Repeat([]byte("A"), 64<<10)
		for n := int64(0); n < limit; n += int64(len(buf)) {
			if _, err := w.Write(buf); err != nil {
				return
			}
			u.written.Add(int64(len(buf)))
		}
	}
}

// trickle sends the header, then one byte every pause, for ever.
func trickle(pause time.Duration, headerFirst bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !headerFirst {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Minute):
			}
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pause):
			}
			if _, err := w.Write([]byte("S")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

func serveBytes(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}
}

// fakeStorePath returns a store path and a NAR URL of its own for a case.
func fakeStorePath(name string) (string, string) {
	sum := sha256.Sum256([]byte(name))
	hp := nixbase32.EncodeToString(sum[:20])
	return "/nix/store/" + hp + "-" + name, "nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
}

func narinfoText(storePath, url string, narHash string, narSize uint64, cid string) []byte {
	ni := &narinfo.NarInfo{StorePath: storePath, URL: url, Compression: "none", FileHash: narHash, FileSize: narSize,
		NarHash: narHash, NarSize: narSize, References: []string{}, IPFSHash: cid}
	return []byte(ni.String())
}

// TestHostileSubstituterUpstream runs the real substituter (through kubo's
// RPC API and through its trustless gateway) against an upstream that lies
// about NarSize, points IPFSHash at other bytes, serves other bytes itself,
// sends endless narinfos and NARs, and trickles. Every answer comes in
// bounded time, the substituter's memory stays bounded, and no NAR is ever
// served complete unless its bytes match the narinfo's NarHash and NarSize.
func TestHostileSubstituterUpstream(t *testing.T) {
	bin := testenv.Binaries(t)
	if !hasCommand(t, bin, "substituter") {
		t.Skip("nix-ipfs substituter has not landed")
	}
	k := testenv.StartKubo(t, testenv.KuboOffline())

	// A real NAR, in kubo; and other bytes, also in kubo.
	dir := t.TempDir()
	content := make([]byte, 300<<10)
	rand.Read(content)
	os.WriteFile(filepath.Join(dir, "f"), content, 0o644)
	var narBuf bytes.Buffer
	if err := nar.DumpPath(&narBuf, filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	good := narBuf.Bytes()
	sum := sha256.Sum256(good)
	goodHash := "sha256:" + nixbase32.EncodeToString(sum[:])
	other := append([]byte(nil), good...)
	other[len(other)/2] ^= 0xff // same size, other bytes
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	goodCID, err := k.Client.Add(ctx, bytes.NewReader(good), ipfs.DefaultParams(), true)
	if err != nil {
		t.Fatal(err)
	}
	otherCID, err := k.Client.Add(ctx, bytes.NewReader(other), ipfs.DefaultParams(), true)
	if err != nil {
		t.Fatal(err)
	}

	u := &hostileUpstream{routes: map[string]http.HandlerFunc{}}
	u.srv = httptest.NewServer(u)
	t.Cleanup(u.srv.Close)
	u.routes["/nix-cache-info"] = serveBytes([]byte("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"))

	type narCase struct {
		name      string
		narinfo   func(sp, url string) http.HandlerFunc
		nar       http.HandlerFunc
		narSize   uint64 // what the narinfo claims
		narinfoOK bool   // the narinfo itself is served (200)
	}
	const endlessCap = 4 << 30
	cases := []narCase{
		{name: "good", nar: serveBytes(good), narSize: uint64(len(good)), narinfoOK: true},
		{name: "narsize-plus-one", nar: serveBytes(good), narSize: uint64(len(good)) + 1, narinfoOK: true},
		{name: "narsize-minus-one", nar: serveBytes(good), narSize: uint64(len(good)) - 1, narinfoOK: true},
		{name: "cid-other-bytes-upstream-good", nar: serveBytes(good), narSize: uint64(len(good)), narinfoOK: true},
		{name: "cid-other-bytes-upstream-other", nar: serveBytes(other), narSize: uint64(len(good)), narinfoOK: true},
		{name: "nar-endless", nar: u.endless(endlessCap), narSize: uint64(len(good)), narinfoOK: true},
		{name: "nar-trickle", nar: trickle(5*time.Second, true), narSize: uint64(len(good)), narinfoOK: true},
		{name: "nar-no-headers", nar: trickle(0, false), narSize: uint64(len(good)), narinfoOK: true},
		{name: "narinfo-endless", narinfo: func(string, string) http.HandlerFunc { return u.endless(endlessCap) }},
		{name: "narinfo-trickle", narinfo: func(string, string) http.HandlerFunc { return trickle(200*time.Millisecond, true) }},
		{name: "narinfo-no-headers", narinfo: func(string, string) http.HandlerFunc { return trickle(0, false) }},
	}
	type route struct {
		sp, url string
	}
	routes := map[string]route{}
	for _, c := range cases {
		sp, url := fakeStorePath(c.name)
		routes[c.name] = route{sp, url}
		cidFor := goodCID.String()
		switch {
		case strings.HasPrefix(c.name, "cid-other-bytes"):
			cidFor = otherCID.String()
		case strings.HasPrefix(c.name, "nar-"):
			cidFor = "" // no IPFSHash: the NAR can only come from upstream
		}
		if c.narinfo != nil {
			u.routes["/"+storepath.HashPart(sp)+".narinfo"] = c.narinfo(sp, url)
		} else {
			u.routes["/"+storepath.HashPart(sp)+".narinfo"] = serveBytes(narinfoText(sp, url, goodHash, c.narSize, cidFor))
		}
		if c.nar != nil {
			u.routes["/"+url] = c.nar
		}
	}

	gateway := kuboGateway(t, k)
	modes := [][]string{{"--kubo-api", k.API}}
	if gateway != "" {
		modes = append(modes, []string{"--gateway", gateway})
	}
	verified, refused, unverified := 0, 0, 0
	for _, mode := range modes {
		addr := freeAddr(t)
		sub := testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), append([]string{"substituter", "--upstream", u.srv.URL,
			"--listen", addr, "--upstream-timeout", "3s", "--ipfs-timeout", "5s", "--log-format", "console"}, mode...))
		testenv.Eventually(t, time.Minute, "substituter listening", func() bool {
			code, _, err := rawGet(t, addr, "/nix-cache-info")
			return err == nil && code == 200
		})
		client := &http.Client{Timeout: 2 * time.Minute} // a hang guard, not a speed test
		for _, c := range cases {
			r := routes[c.name]
			start := time.Now()
			resp, err := client.Get("http://" + addr + "/" + storepath.HashPart(r.sp) + ".narinfo")
			if err != nil {
				t.Errorf("%s %s: narinfo: %v", mode[0], c.name, err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
			resp.Body.Close()
			if (resp.StatusCode == 200) != c.narinfoOK {
				t.Errorf("%s %s: narinfo status %d (%d bytes)", mode[0], c.name, resp.StatusCode, len(body))
			}
			if resp.StatusCode == 200 && len(body) > 1<<20 {
				t.Errorf("%s %s: a narinfo of %d bytes was served", mode[0], c.name, len(body))
			}
			if !c.narinfoOK {
				refused++
				t.Logf("%s %-32s narinfo -> %d in %v", mode[0], c.name, resp.StatusCode, time.Since(start).Round(time.Millisecond))
				continue
			}
			start = time.Now()
			resp, err = client.Get("http://" + addr + "/" + r.url)
			if err != nil {
				refused++
				t.Logf("%s %-32s NAR -> %v in %v", mode[0], c.name, err, time.Since(start).Round(time.Millisecond))
				continue
			}
			h := sha256.New()
			n, rerr := io.Copy(h, io.LimitReader(resp.Body, 64<<20))
			resp.Body.Close()
			complete := resp.StatusCode == 200 && rerr == nil && (resp.ContentLength < 0 || n == resp.ContentLength)
			got := "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
			if complete {
				// Served as good: it must be exactly what the narinfo says.
				if got != goodHash || uint64(n) != c.narSize {
					unverified++
					t.Errorf("%s %s: served %d bytes hashing to %s as good; narinfo says %d bytes, %s", mode[0], c.name, n, got, c.narSize, goodHash)
				} else {
					verified++
				}
			} else {
				refused++
			}
			if c.name == "good" && !complete {
				t.Errorf("%s good: the honest NAR was not served: %d, %d bytes, %v", mode[0], resp.StatusCode, n, rerr)
			}
			t.Logf("%s %-32s NAR -> %d, %d bytes, complete=%v, in %v", mode[0], c.name, resp.StatusCode, n, complete, time.Since(start).Round(time.Millisecond))
		}
		if hwm := peakRSS(t, sub.Cmd.Process.Pid); hwm > 512<<20 {
			t.Errorf("%s: substituter peak memory %d MiB after endless upstream answers", mode[0], hwm>>20)
		} else {
			t.Logf("%s: substituter peak memory %d MiB; the endless handlers wrote %d MiB so far", mode[0], hwm>>20, u.written.Load()>>20)
		}
	}
	reliability(t, "hostile-substituter-upstream", "runs", len(cases)*len(modes), "in", len(cases)*len(modes),
		"served_verified", verified, "refused_or_cut", refused, "unverified_served", unverified, "lost", 0)
}

// kuboGateway returns the gateway URL the daemon logged, or "".
func kuboGateway(t *testing.T, k *testenv.Kubo) string {
	b, err := os.ReadFile(k.Log)
	if err != nil {
		return ""
	}
	m := regexp.MustCompile(`Gateway server listening on /ip4/([0-9.]+)/tcp/([0-9]+)`).FindAllStringSubmatch(string(b), -1)
	if len(m) == 0 {
		return ""
	}
	last := m[len(m)-1]
	return "http://" + last[1] + ":" + last[2]
}

// peakRSS returns a process's peak resident memory (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
