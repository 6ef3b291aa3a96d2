package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// natsAuth is one way of authenticating to NATS, as the server is set up
// and as each component and the test itself are given it.
type natsAuth struct {
	name   string
	server testenv.NATSOption
	env    []string      // NIX_IPFS_NATS_* for the components
	opts   []nats.Option // for the test's own connection
	// secrets must never appear in a log or an output.
	secrets []string
	// wrong is a set of settings the server must refuse.
	wrong []string
}

func authVariants(t *testing.T) []natsAuth {
	t.Helper()
	dir := t.TempDir()
	pass, token := "pw-"+testenv.Nonce(), "tok-"+testenv.Nonce()
	var out []natsAuth

	out = append(out, natsAuth{
		name: "user-password",
		server: func(o *server.Options) {
			o.Users = []*server.User{{Username: "nixipfs", Password: pass}}
		},
		env:     []string{"NIX_IPFS_NATS_USER=nixipfs", "NIX_IPFS_NATS_PASSWORD=" + pass},
		opts:    []nats.Option{nats.UserInfo("nixipfs", pass)},
		secrets: []string{pass},
		wrong:   []string{"NIX_IPFS_NATS_USER=nixipfs", "NIX_IPFS_NATS_PASSWORD=not-" + pass},
	})

	out = append(out, natsAuth{
		name:    "token",
		server:  func(o *server.Options) { o.Authorization = token },
		env:     []string{"NIX_IPFS_NATS_TOKEN=" + token},
		opts:    []nats.Option{nats.Token(token)},
		secrets: []string{token},
		wrong:   []string{"NIX_IPFS_NATS_TOKEN=not-" + token},
	})

	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	os.WriteFile(seedFile, useed, 0o600)
	other, _ := nkeys.CreateUser()
	oseed, _ := other.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	os.WriteFile(otherFile, oseed, 0o600)
	out = append(out, natsAuth{
		name:    "nkey",
		server:  func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: upub}} },
		env:     []string{"NIX_IPFS_NATS_NKEY=" + seedFile},
		opts:    []nats.Option{mustNkey(t, seedFile)},
		secrets: []string{string(useed)},
		wrong:   []string{"NIX_IPFS_NATS_NKEY=" + otherFile},
	})

	// Operator mode: an operator signs an account with JetStream, the
	// account signs a user, and the user's JWT and seed make a creds file.
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	credsFor := func(name string, acct nkeys.KeyPair) (string, string) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		uc := jwt.NewUserClaims(pub)
		uc.Name = name
		ujwt, err := uc.Encode(acct)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		creds, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name+".creds")
		os.WriteFile(f, creds, 0o600)
		return f, string(seed)
	}
	credsFile, credsSeed := credsFor("component", akp)
	// A user signed by an account the operator never signed.
	strayAcct, _ := nkeys.CreateAccount()
	strayFile, _ := credsFor("stray", strayAcct)
	out = append(out, natsAuth{
		name: "creds-jwt",
		server: func(o *server.Options) {
			o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
			r := &server.MemAccResolver{}
			r.Store(apub, ajwt)
			r.Store(sysPub, sysJWT)
			o.AccountResolver = r
			o.SystemAccount = sysPub
		},
		env:     []string{"NIX_IPFS_NATS_CREDS=" + credsFile},
		opts:    []nats.Option{nats.UserCredentials(credsFile)},
		secrets: []string{credsSeed},
		wrong:   []string{"NIX_IPFS_NATS_CREDS=" + strayFile},
	})

	pki := newTestPKI(t)
	tlsEnv := []string{"NIX_IPFS_NATS_TLS_CA=" + pki.CA}
	clientKey, _ := os.ReadFile(pki.ClientKey)
	out = append(out, natsAuth{
		name: "tls-ca",
		server: func(o *server.Options) {
			o.TLS, o.TLSConfig, o.TLSTimeout = true, pki.serverConfig(false), 5
		},
		env:  tlsEnv,
		opts: []nats.Option{nats.RootCAs(pki.CA)},
		// No CA given: the server's certificate cannot be verified.
		wrong: []string{"NIX_IPFS_NATS_TLS_CA=" + pki.RogueCert},
	})
	out = append(out, natsAuth{
		name: "mutual-tls",
		server: func(o *server.Options) {
			o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, true, pki.serverConfig(true), 5
		},
		env:     append(append([]string{}, tlsEnv...), "NIX_IPFS_NATS_TLS_CERT="+pki.ClientCert, "NIX_IPFS_NATS_TLS_KEY="+pki.ClientKey),
		opts:    []nats.Option{nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey)},
		secrets: []string{pemBody(clientKey)},
		wrong:   append(append([]string{}, tlsEnv...), "NIX_IPFS_NATS_TLS_CERT="+pki.RogueCert, "NIX_IPFS_NATS_TLS_KEY="+pki.RogueKey),
	})
	return out
}

func mustNkey(t *testing.T, seedFile string) nats.Option {
	o, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// pemBody returns the base64 lines of a PEM file, the part that is secret.
func pemBody(p []byte) string {
	var lines []string
	for _, l := range strings.Split(string(p), "\n") {
		if !strings.HasPrefix(l, "-----") && l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return lines[0]
}

func connectJS(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// runBin runs one of the binaries with env added to the test's environment.
func runBin(bin string, args []string, env ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSecurityNATSAuth runs every component against a NATS server that
// demands, in turn, a user and password, a token, an NKey, a creds file
// (operator mode, JWT), TLS with a private CA, and mutual TLS. Each does one
// unit of real work: the hook publishes a real build's event, hook flush
// publishes a spooled one, the publisher publishes both paths, status reads
// the stream, and the mirror pins both CIDs. Wrong credentials are refused,
// and no secret shows in any log or output.
func TestSecurityNATSAuth(t *testing.T) {
	bin := testenv.Binaries(t)
	nix := testenv.NewNix(t)
	kubo := testenv.StartKubo(t, testenv.KuboOffline())
	withMirror := hasCommand(t, bin, "mirror")
	hookBin, nixIPFS := filepath.Join(bin, "nix-ipfs-hook"), filepath.Join(bin, "nix-ipfs")
	emptyConf := filepath.Join(t.TempDir(), "hook.conf")
	os.WriteFile(emptyConf, nil, 0o644)

	for _, v := range authVariants(t) {
		t.Run(v.name, func(t *testing.T) {
			n := testenv.StartNATS(t, v.server)
			url := n.URL
			spool := filepath.Join(t.TempDir(), "spool")
			cache := filepath.Join(t.TempDir(), "cache")
			base := []string{"NIX_IPFS_NATS_URL=" + url, "NIX_IPFS_CONFIG=" + emptyConf}
			env := append(append([]string{}, base...), v.env...)
			var outputs []string // everything the components printed or logged

			// The publisher first: it creates the stream.
			pub := testenv.StartProc(t, nixIPFS, []string{"publisher"}, append(append([]string{}, env...),
				"NIX_IPFS_KUBO_API="+kubo.API, "NIX_IPFS_CACHE_DIR="+cache,
				"NIX_IPFS_SECRET_KEY_FILE="+nix.SecretKey, "NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_LOG_LEVEL=debug")...)
			js := connectJS(t, url, v.opts...)
			testenv.Eventually(t, time.Minute, "the publisher to create the stream", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := js.Stream(ctx, events.DefaultStream)
				return err == nil
			})

			// The hook, as Nix runs it, after a real build.
			nix.Hook = hookBin
			nix.Env = append(append([]string{}, env...), "NIX_IPFS_SPOOL_DIR="+spool, "NIX_IPFS_TIMEOUT=10s")
			direct := nix.Build(t, testenv.Drv("auth-"+v.name+"-"+testenv.Nonce(), `echo direct > $out`, ""))[0]
			if files, _ := (hook.Spool{Dir: spool}).List(); len(files) != 0 {
				t.Fatalf("the hook spooled instead of publishing with %s", v.name)
			}
			// The hook with NATS out of reach spools; flush publishes it.
			nix.Env = append(append([]string{}, nix.Env...), "NIX_IPFS_NATS_URL=nats://127.0.0.1:1")
			spooled := nix.Build(t, testenv.Drv("auth-spooled-"+v.name+"-"+testenv.Nonce(), `echo spooled > $out`, ""))[0]
			out, err := runBin(hookBin, []string{"flush"}, append(append([]string{}, env...), "NIX_IPFS_SPOOL_DIR="+spool)...)
			outputs = append(outputs, out)
			if err != nil || !strings.Contains(out, "flushed 1 ") {
				t.Fatalf("hook flush with %s: %v\n%s", v.name, err, out)
			}
			// Wrong credentials: flush fails and the event stays spooled.
			if _, err := runBin(hookBin, nil, append(append(append([]string{}, base...), v.wrong...),
				"NIX_IPFS_SPOOL_DIR="+spool, "NIX_IPFS_TIMEOUT=5s", "OUT_PATHS="+direct)...); err != nil {
				t.Errorf("the hook exited non-zero with wrong credentials: %v", err)
			}
			if files, _ := (hook.Spool{Dir: spool}).List(); len(files) != 1 {
				t.Errorf("with wrong credentials (%s) the hook did not spool: %d files", v.name, len(files))
			}
			out, err = runBin(hookBin, []string{"flush", "--flush-timeout", "10s"}, append(append(append([]string{}, base...), v.wrong...), "NIX_IPFS_SPOOL_DIR="+spool)...)
			outputs = append(outputs, out)
			refusedWrong := 0
			if err == nil {
				t.Errorf("hook flush succeeded with wrong credentials (%s):\n%s", v.name, out)
			} else {
				refusedWrong++
			}
			os.RemoveAll(spool)

			// The publisher publishes both.
			paths := []string{direct, spooled}
			testenv.Eventually(t, 2*time.Minute, "both paths published", func() bool { return countNarinfos(cache, paths) == 2 })
			got := map[string]string{}
			for _, e := range streamEvents(t, js, events.SubjectPublished) {
				pe := e.(*events.Published)
				got[pe.StorePath] = pe.CID
			}
			for _, p := range paths {
				if got[p] == "" {
					t.Errorf("%s: no published event", p)
				}
			}

			// Status reads the stream; without credentials it cannot.
			out, err = runBin(nixIPFS, []string{"status", "--json"}, env...)
			outputs = append(outputs, out)
			var st struct {
				Stream    string `json:"stream"`
				Consumers []struct {
					Name string `json:"name"`
				} `json:"consumers"`
			}
			if err != nil || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st) != nil || st.Stream != events.DefaultStream || len(st.Consumers) == 0 {
				t.Errorf("status with %s: %v\n%s", v.name, err, out)
			}
			out, err = runBin(nixIPFS, []string{"status", "--status-timeout", "5s"}, append(append([]string{}, base...), v.wrong...)...)
			outputs = append(outputs, out)
			if err == nil {
				t.Errorf("status succeeded with wrong credentials (%s):\n%s", v.name, out)
			} else {
				refusedWrong++
			}

			components := 4
			if withMirror {
				components++
				mir := testenv.StartProc(t, nixIPFS, []string{"mirror", "--name", "auth"}, append(append([]string{}, env...),
					"NIX_IPFS_KUBO_API="+kubo.API, "NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_LOG_LEVEL=debug")...)
				testenv.Eventually(t, 2*time.Minute, "both CIDs pinned by the mirror", func() bool {
					n := 0
					for _, e := range streamEvents(t, js, events.SubjectPinned("auth")) {
						if c := e.(*events.Pinned).CID; c == got[direct] || c == got[spooled] {
							n++
						}
					}
					return n == 2
				})
				outputs = append(outputs, readFile(t, mir.Log))
			}
			outputs = append(outputs, readFile(t, pub.Log))
			leaks := 0
			for _, s := range v.secrets {
				for _, o := range outputs {
					if s != "" && strings.Contains(o, s) {
						leaks++
						t.Errorf("%s: a secret shows in a component's output", v.name)
					}
				}
			}
			reliability(t, "nats-auth-"+v.name, "runs", components, "in", len(paths), "out", len(got), "wrong_refused", refusedWrong, "secret_leaks", leaks, "lost", len(paths)-len(got))
		})
	}
}
