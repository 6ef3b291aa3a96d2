package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// hostA is a builder with a kubo daemon and a running publisher binary.
type hostA struct {
	*builder
	kubo  *testenv.Kubo
	cache string
	pub   *testenv.Proc
}

func newHostA(t *testing.T, kuboOpts ...testenv.KuboOption) *hostA {
	t.Helper()
	return newHostAWith(t, testenv.NewNix(t), kuboOpts...)
}

// newHostAWith is newHostA with a given Nix (testenv.ForEachNix). The
// publisher runs beside that Nix: for the chroot's, inside the chroot, as
// the same static binary, reading the chroot's database and store (its
// default --nix-db), and reaching NATS and kubo on the host's loopback, as
// on a builder running that Nix.
func newHostAWith(t *testing.T, n *testenv.Nix, kuboOpts ...testenv.KuboOption) *hostA {
	t.Helper()
	a := &hostA{builder: newBuilderWith(t, n)}
	a.kubo = testenv.StartKubo(t, kuboOpts...)
	a.cache = filepath.Join(t.TempDir(), "cache")
	return a
}

func (a *hostA) publisherEnv() []string {
	return []string{
		"NIX_IPFS_NATS_URL=" + a.nats.URL,
		"NIX_IPFS_KUBO_API=" + a.kubo.API,
		"NIX_IPFS_CACHE_DIR=" + a.cache,
		"NIX_IPFS_SECRET_KEY_FILE=" + a.nix.SecretKey,
		"NIX_IPFS_LOG_FORMAT=console",
		"NIX_IPFS_LOG_LEVEL=debug",
	}
}

func (a *hostA) startPublisher(t *testing.T, extraArgs ...string) {
	t.Helper()
	a.pub = a.nix.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), append([]string{"publisher"}, extraArgs...), a.publisherEnv()...)
}

// waitPublished waits until every path has a narinfo with an IPFSHash.
func (a *hostA) waitPublished(t *testing.T, paths []string, timeout time.Duration) map[string]*narinfo.NarInfo {
	t.Helper()
	out := map[string]*narinfo.NarInfo{}
	testenv.Eventually(t, timeout, fmt.Sprintf("%d paths published", len(paths)), func() bool {
		for _, p := range paths {
			if out[p] != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join(a.cache, storepath.HashPart(p)+".narinfo"))
			if err != nil {
				return false
			}
			ni, err := narinfo.ParseBytes(b)
			if err != nil {
				t.Fatalf("narinfo of %s does not parse: %v\n%s", p, err, b)
			}
			out[p] = ni
		}
		return true
	})
	return out
}

// richClosure is a closure of several paths exercising every NAR feature:
// nested directories, executables, symlinks, empty files and directories, a
// file of several MiB, names with spaces and non-ASCII characters.
func richClosure(nonce string) string {
	leaf := testenv.Drv("leaf-"+nonce, `
mkdir -p $out/a/b/c $out/empty-dir
echo nested > $out/a/b/c/file
: > $out/empty-file
printf '#!/bin/sh\necho hi\n' > $out/a/run; chmod +x $out/a/run
ln -s a/b/c/file $out/link
ln -s /nonexistent/target $out/dangling
echo space > "$out/name with spaces"
echo unicode > "$out/ünïcödé-файл-名前"
dd if=/dev/urandom of=$out/big bs=1048576 count=5 2>/dev/null`, "")
	mid := fmt.Sprintf(`let leaf = %s; in %s`, leaf, testenv.Drv("mid-"+nonce, `
mkdir -p $out/bin
echo "${leaf}" > $out/leaf-ref
ln -s ${leaf}/a/run $out/bin/run`, `inherit leaf;`))
	return fmt.Sprintf(`let mid = %s; other = %s; in %s`, mid,
		testenv.Drv("other-"+nonce, `echo single-file-output > $out`, ""),
		testenv.Drv("top-"+nonce, `
mkdir -p $out
echo "${mid} ${other}" > $out/refs
echo self: $out > $out/self`, `inherit mid other;`))
}

func closureOf(t *testing.T, n *testenv.Nix, p string) []string {
	return strings.Fields(n.Run(t, "nix-store", "--query", "--requisites", p))
}

// TestPublisherMatchesNixCopy is the proof of the publisher against real
// Nix as the oracle: a real nix-build through the hook, NATS and the
// publisher binary against a real kubo; then for every path of the closure,
// the NAR is byte-identical to nix-store --dump, the narinfo has the field
// values `nix copy --to file://...?compression=none` writes with the same key
// (signature included), and the IPFSHash's bytes hash to NarHash; once per
// Nix version, each its own oracle (Nix 2.26's publisher runs in its chroot).
func TestPublisherMatchesNixCopy(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		a := newHostAWith(t, n)
		a.startPublisher(t)
		top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
		closure := closureOf(t, a.nix, top)
		if len(closure) < 4 {
			t.Fatalf("closure %v: want at least 4 paths", closure)
		}
		got := a.waitPublished(t, closure, 2*time.Minute)

		golden := filepath.Join(t.TempDir(), "golden")
		a.nix.Run(t, "nix", "copy", "--to", "file://"+golden+"?compression=none&secret-key="+a.nix.SecretKey, top)

		pk, err := signature.ParsePublicKey(a.nix.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range closure {
			ni := got[p]
			hp := storepath.HashPart(p)
			want, err := os.ReadFile(filepath.Join(golden, hp+".narinfo"))
			if err != nil {
				t.Fatal(err)
			}
			wni, err := narinfo.ParseBytes(want)
			if err != nil {
				t.Fatal(err)
			}
			if p == top {
				t.Logf("Nix %s's nix copy wrote, for the top path:\n%s", n.Version, want)
			}
			if ni.IPFSHash == "" {
				t.Errorf("%s: no IPFSHash", p)
			}
			// The CID's binding is signed with the cache's key.
			if err := ni.VerifyCID([]signature.PublicKey{pk}); err != nil {
				t.Errorf("%s: IPFSSig: %v", p, err)
			}
			// Field by field, the signature included; then byte for byte once
			// our extension line is taken out.
			cmp := *ni
			cmp.IPFSHash = ""
			cmp.IPFSSigs = nil
			if !reflect.DeepEqual(&cmp, wni) {
				t.Errorf("%s: narinfo differs from nix copy's\n ours: %+v\nnix's: %+v", p, cmp, *wni)
			}
			if cmp.String() != string(want) {
				t.Errorf("%s: narinfo text differs from nix copy's\n%s\n---\n%s", p, cmp.String(), want)
			}
			nar, err := os.ReadFile(filepath.Join(a.cache, ni.URL))
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			dump := a.nix.Dump(t, p)
			if !bytes.Equal(nar, dump) {
				t.Errorf("%s: NAR differs from nix-store --dump (%d vs %d bytes)", p, len(nar), len(dump))
			}
			// Read the CID back through the ipfs CLI, not our client.
			catted := a.kubo.IPFS(t, "cat", ni.IPFSHash)
			sum := sha256.Sum256([]byte(catted))
			if h := "sha256:" + nixbase32.EncodeToString(sum[:]); h != ni.NarHash {
				t.Errorf("%s: ipfs cat %s hashes to %s, NarHash is %s", p, ni.IPFSHash, h, ni.NarHash)
			}
		}
		if info, err := os.ReadFile(filepath.Join(a.cache, "nix-cache-info")); err != nil || string(info) != "StoreDir: /nix/store\n" {
			t.Errorf("nix-cache-info = %q, %v", info, err)
		}

		// One "published" event per path, carrying what the narinfo says.
		_, js := a.nats.Connect(t)
		pubs := map[string]*events.Published{}
		for _, e := range streamEvents(t, js, events.SubjectPublished) {
			pe := e.(*events.Published)
			if pubs[pe.StorePath] != nil {
				t.Errorf("%s announced twice", pe.StorePath)
			}
			pubs[pe.StorePath] = pe
		}
		for _, p := range closure {
			pe := pubs[p]
			if pe == nil {
				t.Errorf("%s: no published event", p)
				continue
			}
			if pe.CID != got[p].IPFSHash || pe.NarHash != got[p].NarHash || pe.NarURL != got[p].URL || pe.Publisher.PeerID == "" || len(pe.Publisher.Addrs) == 0 {
				t.Errorf("%s: event %+v does not match narinfo", p, pe)
			}
		}

		t.Run("StockNixAcceptsCache", func(t *testing.T) {
			checkStockNixCopy(t, a, top, "file://"+a.cache)
			srv := httptest.NewServer(http.FileServer(http.Dir(a.cache)))
			defer srv.Close()
			checkStockNixCopy(t, a, top, srv.URL)
		})
		t.Run("TamperedSignatureRefused", func(t *testing.T) {
			tampered := filepath.Join(t.TempDir(), "tampered")
			if out, err := exec.Command("cp", "-a", a.cache, tampered).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			f := filepath.Join(tampered, storepath.HashPart(top)+".narinfo")
			b, _ := os.ReadFile(f)
			ni, _ := narinfo.ParseBytes(b)
			ni.NarSize++ // the signature no longer covers what the narinfo says
			os.WriteFile(f, []byte(ni.String()), 0o644)
			dest := filepath.Join(t.TempDir(), "store-c")
			_, err := a.nix.Try("nix", "copy", "--from", "file://"+tampered, "--to", dest,
				"--option", "trusted-public-keys", a.nix.PublicKey, "--option", "require-sigs", "true", top)
			if err == nil || !strings.Contains(err.Error(), "signature") {
				t.Errorf("nix copy of a tampered narinfo: %v", err)
			} else {
				t.Logf("Nix %s refused it: %s", n.Version, lastLine(err.Error()))
			}
		})
	})
}

// checkStockNixCopy copies top from the cache into a fresh chroot store,
// trusting only the cache's key, and checks the contents match.
func checkStockNixCopy(t *testing.T, a *hostA, top, from string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "store-c")
	a.nix.Run(t, "nix", "copy", "--from", from, "--to", dest,
		"--option", "trusted-public-keys", a.nix.PublicKey, "--option", "require-sigs", "true", top)
	for _, p := range closureOf(t, a.nix, top) {
		if _, err := a.nix.Try("nix-store", "--store", dest, "--check-validity", p); err != nil {
			t.Errorf("%s not valid in the client store: %v", p, err)
			continue
		}
		want := a.nix.Dump(t, p)
		// The chroot store's own copy: `nix-store --store DIR --dump P`
		// would dump the host's P whatever DIR holds.
		got := a.nix.Dump(t, filepath.Join(dest, p))
		if !bytes.Equal(got, want) {
			t.Errorf("%s from %s: contents differ in the client store (%d vs %d bytes)", p, from, len(got), len(want))
		}
	}
}

// TestPublisherSurvivesKuboOutage: kubo stopped while events arrive; nothing
// is lost or dead-lettered, and once kubo is back every path is published.
func TestPublisherSurvivesKuboOutage(t *testing.T) {
	a := newHostA(t)
	a.startPublisher(t)
	a.kubo.Stop(t)
	var outs []string
	for i := 0; i < 3; i++ {
		outs = append(outs, a.nix.Build(t, testenv.Drv(fmt.Sprintf("outage-%d-%s", i, testenv.Nonce()), "echo $RANDOM > $out", ""))...)
	}
	// Let the publisher fail a few times against the stopped daemon.
	time.Sleep(3 * time.Second)
	for _, p := range outs {
		if _, err := os.Stat(filepath.Join(a.cache, storepath.HashPart(p)+".narinfo")); err == nil {
			t.Fatalf("%s published with kubo down", p)
		}
	}
	a.kubo.Start(t)
	a.waitPublished(t, outs, 2*time.Minute)
	_, js := a.nats.Connect(t)
	if dead := streamEvents(t, js, events.SubjectDeadPrefix+">"); len(dead) != 0 {
		t.Errorf("%d events dead-lettered during a transient outage: %+v", len(dead), dead[0])
	}
}

// lastLine is the last non-empty line of s: the gist of a Nix error.
func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l[len(l)-1])
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpOK(url string) bool {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}
