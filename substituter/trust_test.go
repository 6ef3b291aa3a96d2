package substituter

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// signedFixture is a fixture whose server trusts the keys of trusted, with
// its log observed.
func signedFixture(t *testing.T, trusted ...signature.SecretKey) (*fixture, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	f := newFixture(t, func(o *Options) {
		o.Log = zap.New(core)
		for _, k := range trusted {
			o.TrustedKeys = append(o.TrustedKeys, k.ToPublicKey())
		}
	})
	return f, logs
}

func newKey(t *testing.T, name string) signature.SecretKey {
	t.Helper()
	sk, _, err := signature.GenerateKeypair(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// signWith signs the narinfo's CID binding with sk.
func signWith(t *testing.T, sk signature.SecretKey) func(*narinfo.NarInfo) {
	return func(ni *narinfo.NarInfo) {
		if err := ni.SignCID(sk); err != nil {
			t.Fatal(err)
		}
	}
}

// addSignedWrong adds a 300,000-byte path "victim" whose narinfo signs,
// with sk, the CID of other bytes of wrongSize (a publisher bug). It
// returns the path and those other bytes.
func addSignedWrong(t *testing.T, f *fixture, sk signature.SecretKey, wrongSize int) (*storePath, []byte) {
	t.Helper()
	wrong := payload("other", wrongSize)
	wc := rawCID(wrong)
	f.ipfs.put(wc, wrong)
	p := f.addPath("victim", payload("victim", 300000), func(ni *narinfo.NarInfo) {
		ni.IPFSHash = wc.String()
		signWith(t, sk)(ni)
	})
	return p, wrong
}

// servedLine is the "NAR served" log entry's fields.
func servedLine(t *testing.T, logs *observer.ObservedLogs) map[string]any {
	t.Helper()
	es := logs.FilterMessage("NAR served").All()
	if len(es) == 0 {
		t.Fatal("no NAR served line")
	}
	return es[len(es)-1].ContextMap()
}

// TestSignedCIDStreamsFirstFetch: a CID whose IPFSSig verifies under a
// trusted key streams on its very first fetch: read ahead from its
// narinfo like any other, but the response and its first bytes come while
// IPFS still holds back the rest; the bytes are the NAR, and that one read
// is all.
func TestSignedCIDStreamsFirstFetch(t *testing.T) {
	sk := newKey(t, "cache-1")
	f, logs := signedFixture(t, sk)
	release := make(chan struct{})
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		return halfGated(b, release), nil
	}
	p := f.addPath("signed", payload("signed", 1<<20), signWith(t, sk))
	f.mustGet(http.MethodGet, p.narinfoPath())
	resp, b, err := f.getFollowing(p.narPath(), release)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(p.nar)) || !bytes.Equal(b, p.nar) {
		t.Fatalf("signed NAR: %v, %d bytes, %v", resp, len(b), err)
	}
	f.waitMetric(1, "nixipfs_substituter_nars_total", "source", SourceIPFS)
	if l := servedLine(t, logs); l["streamed"] != true || l["trust"] != trustSigned {
		t.Errorf("NAR served line %v: want streamed, trust signed", l)
	}
	if n := f.ipfs.calls(); n != 1 {
		t.Errorf("IPFS read %d times, want 1 (read ahead, and followed)", n)
	}
	if n := f.hitsOf(p.narPath()); n != 0 {
		t.Errorf("upstream NAR fetched %d times", n)
	}
}

// TestUnsignedOrUntrustedCIDChecksFirst: without keys, with another key,
// or with an IPFSSig for other values, nothing changes: the NAR is read
// ahead and checked whole before it is sent. Why not is logged.
func TestUnsignedOrUntrustedCIDChecksFirst(t *testing.T) {
	sk, other := newKey(t, "cache-1"), newKey(t, "cache-2")
	for _, tc := range []struct {
		name    string
		trusted []signature.SecretKey
		mod     func(*narinfo.NarInfo)
		why     string
	}{
		{"no keys", nil, signWith(t, sk), ""},
		{"no IPFSSig", []signature.SecretKey{sk}, nil, "no IPFSSig"},
		{"other key", []signature.SecretKey{other}, signWith(t, sk), "not a trusted key"},
		{"impostor", []signature.SecretKey{newKey(t, "cache-1")}, signWith(t, sk), "does not verify"},
		{"malformed", []signature.SecretKey{sk}, func(ni *narinfo.NarInfo) { ni.IPFSSigs = []string{"cache-1:bm90IGEgc2lnbmF0dXJl"} }, "corrupt"},
		{"signed for another size", []signature.SecretKey{sk}, func(ni *narinfo.NarInfo) {
			ni.NarSize++
			signWith(t, sk)(ni)
			ni.NarSize--
		}, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, logs := signedFixture(t, tc.trusted...)
			f.ipfs.catted = make(chan cid.Cid, 1)
			p := f.addPath("plain", payload("plain", 300000), tc.mod)
			f.mustGet(http.MethodGet, p.narinfoPath())
			<-f.ipfs.catted // read ahead: not trusted
			resp, b := f.mustGet(http.MethodGet, p.narPath())
			if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
				t.Fatalf("NAR: %d, %d bytes", resp.StatusCode, len(b))
			}
			f.waitMetric(1, "nixipfs_substituter_nars_total", "source", SourceIPFS)
			if l := servedLine(t, logs); l["streamed"] != nil || l["ipfs_took"] == nil {
				t.Errorf("NAR served line %v: want read and checked first", l)
			}
			if tc.why != "" {
				es := logs.FilterMessageSnippet("IPFSSig").All()
				if len(es) != 1 || !strings.Contains(es[0].Message+" "+errString(es[0].ContextMap()), tc.why) {
					t.Errorf("IPFSSig log lines %v: want one saying %q", es, tc.why)
				}
			}
		})
	}
}

func errString(m map[string]any) string {
	if e, ok := m["error"].(string); ok {
		return e
	}
	return ""
}

// sizedReader is a Cat answer that says its size first, as kubo's gateway
// does with Content-Length.
type sizedReader struct {
	io.Reader
	n int64
}

func (r sizedReader) Size() int64  { return r.n }
func (r sizedReader) Close() error { return nil }

// TestSignedWrongCIDOtherSize: a publisher bug signs a CID of other bytes
// of another size. The size IPFS announces gives it away before a byte is
// sent: the NAR comes whole from upstream, and the CID is never trusted
// again.
func TestSignedWrongCIDOtherSize(t *testing.T) {
	sk := newKey(t, "cache-1")
	f, logs := signedFixture(t, sk)
	f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
		return sizedReader{bytes.NewReader(b), int64(len(b))}, nil
	}
	p, _ := addSignedWrong(t, f, sk, 200000)
	f.mustGet(http.MethodGet, p.narinfoPath())
	for i := 0; i < 2; i++ {
		resp, b := f.mustGet(http.MethodGet, p.narPath())
		if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
			t.Fatalf("fetch %d: %d, %d bytes", i, resp.StatusCode, len(b))
		}
	}
	f.waitMetric(2, "nixipfs_substituter_nars_total", "source", SourceUpstream, "reason", ReasonSizeMismatch)
	if n := f.ipfs.calls(); n != 2 {
		t.Errorf("IPFS asked %d times, want 2: streamed, then read and checked first", n)
	}
	es := logs.FilterMessageSnippet("falling back to upstream").All()
	if len(es) != 2 || es[0].ContextMap()["trust"] != trustSigned || es[1].ContextMap()["trust"] != nil {
		t.Errorf("fallbacks logged: %v; want one while trusted as signed, then one not trusted", es)
	}
}

// TestSignedWrongCIDSameSize: a signed CID of other bytes of the same size
// is never served complete. A request already sending it is cut before
// the last chunk; one that comes after the read found it out gets the
// upstream NAR. The CID is then refuted, and the next fetch is read and
// checked first and comes from upstream, whole.
func TestSignedWrongCIDSameSize(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(map[bool]string{false: "while sending", true: "before sending"}[early], func(t *testing.T) {
			sk := newKey(t, "cache-1")
			f, _ := signedFixture(t, sk)
			release := make(chan struct{})
			if !early {
				f.ipfs.serve = func(call int, c cid.Cid, b []byte) (io.ReadCloser, error) {
					if call == 1 {
						return halfGated(b, release), nil
					}
					return io.NopCloser(bytes.NewReader(b)), nil
				}
			}
			p, wrong := addSignedWrong(t, f, sk, 300000)
			f.mustGet(http.MethodGet, p.narinfoPath())
			if early {
				waitFor(t, "the wrong read ended", func() bool {
					e := f.srv.spools.Entry(p.narPath())
					return e != nil && e.IsDone()
				})
				resp, b := f.mustGet(http.MethodGet, p.narPath())
				if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
					t.Fatalf("after the wrong read: %d, %d bytes", resp.StatusCode, len(b))
				}
			} else {
				resp, b, err := f.getFollowing(p.narPath(), release)
				if err == nil && resp.StatusCode == 200 && len(b) == len(p.nar) {
					t.Fatalf("wrong bytes served whole (%d bytes)", len(b))
				}
				if len(b) >= len(wrong) {
					t.Fatalf("got %d bytes of %d", len(b), len(wrong))
				}
			}
			resp, b := f.mustGet(http.MethodGet, p.narPath())
			if resp.StatusCode != 200 || !bytes.Equal(b, p.nar) {
				t.Fatalf("next fetch: %d, %d bytes", resp.StatusCode, len(b))
			}
			f.waitMetric(map[bool]float64{false: 1, true: 2}[early], "nixipfs_substituter_nars_total", "source", SourceUpstream, "reason", ReasonHashMismatch)
			if n := f.ipfs.calls(); n != 2 {
				t.Errorf("IPFS read %d times, want 2", n)
			}
		})
	}
}

// TestParseTrustedKeys: nix.conf's syntax, and a clear error for a bad key.
func TestParseTrustedKeys(t *testing.T) {
	a, b := newKey(t, "a-1").ToPublicKey(), newKey(t, "b-1").ToPublicKey()
	keys, err := ParseTrustedKeys("  " + a.String() + "\t\n" + b.String() + " ")
	if err != nil || len(keys) != 2 || keys[0].Name != "a-1" || keys[1].Name != "b-1" {
		t.Fatalf("ParseTrustedKeys = %v, %v", keys, err)
	}
	if keys, err := ParseTrustedKeys(""); err != nil || keys != nil {
		t.Errorf("empty: %v, %v", keys, err)
	}
	for _, bad := range []string{"nocolon", "a:notbase64!", "a:AAAA", a.String() + " x:"} {
		if _, err := ParseTrustedKeys(bad); err == nil || !strings.Contains(err.Error(), "--trusted-public-keys") {
			t.Errorf("ParseTrustedKeys(%q) = %v, want an error naming the flag", bad, err)
		}
	}
}
