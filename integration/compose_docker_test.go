package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// The images docker-compose.yml names besides its own. No registry is
// reachable here, so the test builds stand-ins under these very tags from
// the same releases of the same programs, honouring what the compose file
// relies on in the upstream images (see kuboImage and natsImage).
const (
	composeNATSImage    = "nats:2.15"
	composeNATSVersion  = "v2.15.2" // scripts/install-deps.sh NATS_SERVER_VERSION, go.mod's
	composeKuboImage    = "ipfs/kubo:v0.42.0"
	composeKuboVersion  = "0.42.0"
	composeProjectImage = "nix-ipfs:latest"
	// composeUID is the user and group the nix-ipfs image runs as (the
	// Dockerfile's USER, scripts/image-root.sh).
	composeUID = 65532
)

// TestComposeRunsTheDefaultProfile runs docker-compose.yml for real: the
// project's image built from its Dockerfile's final stage, stand-ins for
// the NATS and kubo images, the default profile started by Debian's
// docker-compose on a dockerd of the test's own. The containers use host
// networking inside the engine's own network namespace (loopback only), so
// the test's copy of the compose file changes only what host networking
// changes (hostNetworkCompose): no port mappings and no project network,
// no service names to resolve, and kubo's gateway off the port cache-http
// uses. A real nix-build on the host (in that namespace) runs
// the real hook into the stack's NATS; the stack's publisher publishes the
// closure into the cache volume and, by reference, into kubo-a's
// filestore; stock Nix then copies the closure from the stack's cache-http,
// and through a substituter that reads the NARs from kubo-a over IPFS.
// The publisher and cache-http run as nix-ipfs (uid 65532), not root: the
// cache volume, which kubo-a mounts too, is nix-ipfs's (Docker's copy-up
// of the image's /data/cache), the signing key is chowned to that uid as
// docs/OPERATIONS.md tells operators, and nothing under /nix is writable.
func TestComposeRunsTheDefaultProfile(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	dc := testenv.NeedProgram(t, "docker-compose")
	natsBin := testenv.NeedProgram(t, "nats-server-"+composeNATSVersion)
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	root, _ := filepath.Abs("..")
	start := time.Now()
	step := func(what string) { t.Logf("%s after %v", what, time.Since(start).Round(time.Second)) }
	e := startDockerEngine(t)
	step("dockerd up")

	work := t.TempDir()
	buildProjectImage(t, e, root, filepath.Join(work, "nix-ipfs"))
	buildNATSImage(t, e, natsBin, filepath.Join(work, "nats"))
	buildKuboImage(t, e, filepath.Join(work, "kubo"))
	step("images built")

	// What host networking changes, and nothing else.
	hostnet := filepath.Join(work, "099-host-network.sh")
	os.WriteFile(hostnet, []byte(`#!/bin/sh
# Host networking: one loopback for every service, so kubo's gateway moves
# to the host port the compose file maps it to (127.0.0.1:8081), off
# cache-http's 8080.
set -e
ipfs config Addresses.Gateway /ip4/127.0.0.1/tcp/8081
`), 0o755)
	composeFile := hostNetworkCompose(t, root, work, hostnet)

	// The signing key as docs/OPERATIONS.md has the operator keep it: in a
	// directory only root enters, owned by the image's user, mode 400.
	secrets := filepath.Join(work, "secrets")
	must(t, os.Mkdir(secrets, 0o700))
	key := filepath.Join(secrets, "signing-key")
	copyFile(t, n.SecretKey, key, 0o400)
	must(t, os.Chown(key, composeUID, composeUID))

	compose := func(args ...string) *exec.Cmd {
		cmd := exec.Command(dc, append([]string{"--project-directory", root, "-f", composeFile}, args...)...)
		cmd.Dir = root
		cmd.Env = append(e.env(), "SIGNING_KEY_FILE="+key, "CACHE_URL=http://127.0.0.1:8080")
		return cmd
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("logs", "--no-color", "--tail=40").CombinedOutput()
			t.Logf("docker-compose logs:\n%s", out)
		}
		out, err := compose("down", "--volumes", "--timeout", "20").CombinedOutput()
		if err != nil && !t.Failed() {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})
	// kubo-a first, then the rest: the cache volume is first mounted by an
	// image without /data/cache, the case that left it root's before the
	// nix-ipfs image brought its own /data/cache for Docker to copy up.
	for _, svcs := range [][]string{{"kubo-a"}, nil} {
		if out, err := compose(append([]string{"up", "--detach", "--no-build"}, svcs...)...).CombinedOutput(); err != nil {
			t.Fatalf("docker-compose up %v: %v\n%s", svcs, err, out)
		}
	}
	// Traffic only on loopback: the engine's namespace has no other link.
	if out, err := e.inNS(exec.Command("ip", "-o", "link")).Output(); err != nil || strings.Count(string(out), "\n") != 1 {
		t.Errorf("the engine's namespace has links besides lo (%v):\n%s", err, out)
	}
	step("stack up")
	ps, _ := compose("ps", "--services", "--filter", "status=running").Output()
	t.Logf("running: %s", strings.Join(strings.Fields(string(ps)), " "))

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: e.dial}}
	get := func(url string) (int, []byte) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	const cache = "http://127.0.0.1:8080"
	testenv.Eventually(t, 2*time.Minute, "cache-http, kubo-a and the publisher ready", func() bool {
		code, _ := get(cache + "/nix-cache-info")
		if code != 200 {
			return false
		}
		resp, err := client.Post("http://127.0.0.1:5001/api/v0/id", "", nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		// The publisher made its stream and consumer: a built event now
		// has somewhere to go (else the hook spools it, rightly).
		_, b := get("http://127.0.0.1:8222/jsz")
		var jsz struct{ Streams, Consumers int }
		json.Unmarshal(b, &jsz)
		return jsz.Streams > 0 && jsz.Consumers > 0
	})

	step("stack answering")
	// A real build on the host, through the hook, into the stack's NATS.
	n.Hook = filepath.Join(bin, "nix-ipfs-hook")
	empty := filepath.Join(work, "hook.conf")
	os.WriteFile(empty, nil, 0o644)
	// A generous timeout: on a loaded machine the default 500 ms can pass
	// before JetStream acks, and the hook (rightly) spools instead.
	n.Env = []string{"NIX_IPFS_NATS_URL=nats://127.0.0.1:4222", "NIX_IPFS_CONFIG=" + empty, "NIX_IPFS_TIMEOUT=10s",
		"NIX_IPFS_SPOOL_DIR=" + filepath.Join(work, "spool")}
	expr := filepath.Join(work, "closure.nix")
	os.WriteFile(expr, []byte(richClosure(testenv.Nonce())), 0o644)
	build := e.inNS(n.Command("nix-build", expr, "--no-out-link"))
	var stderr strings.Builder
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("nix-build through the hook: %v\n%s", err, stderr.String())
	}
	top := strings.TrimSpace(string(out))
	closure := closureOf(t, n, top)
	if spooled, _ := (hook.Spool{Dir: filepath.Join(work, "spool")}).List(); len(spooled) > 0 {
		// On a loaded machine the hook may give up on NATS in time and
		// spool, as it must; the flush a timer runs in production sends on.
		t.Logf("the hook spooled %d events; flushing them as deploy/'s timer would:\n%s", len(spooled), grepLines(stderr.String(), "post-build-hook"))
		flush := exec.Command(n.Hook, "flush")
		flush.Env = append(cleanEnv(), n.Env...)
		if out, err := e.inNS(flush).CombinedOutput(); err != nil {
			t.Fatalf("nix-ipfs-hook flush: %v\n%s", err, out)
		}
	}

	infos := map[string]*narinfo.NarInfo{}
	testenv.Eventually(t, 2*time.Minute, "the closure published by the stack", func() bool {
		for _, p := range closure {
			if infos[p] != nil {
				continue
			}
			code, b := get(cache + "/" + storepath.HashPart(p) + ".narinfo")
			if code != 200 {
				return false
			}
			ni, err := narinfo.ParseBytes(b)
			if err != nil {
				t.Fatalf("%s: narinfo from cache-http does not parse: %v", p, err)
			}
			infos[p] = ni
		}
		return true
	})

	step("closure published")
	// Unprivileged: the workers run as nix-ipfs, and what the publisher
	// wrote into the cache volume is nix-ipfs's.
	container := func(svc string) string {
		out, err := compose("ps", "-q", svc).Output()
		id := strings.TrimSpace(string(out))
		if err != nil || id == "" {
			t.Fatalf("docker-compose ps -q %s: %v %q", svc, err, out)
		}
		return id
	}
	pub := container("publisher")
	checkRunsAs(t, e, pub, "publisher", composeUID)
	checkRunsAs(t, e, container("cache-http"), "cache-http", composeUID)
	checkPublisherMounts(t, e, pub, composeUID)
	checkCacheOwner(t, e, pub, composeUID, len(closure))
	created := func(svc string) time.Time {
		s := strings.TrimSpace(e.run(t, "inspect", "-f", "{{.Created}}", container(svc)))
		c, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("%s created at %q: %v", svc, s, err)
		}
		return c
	}
	for _, svc := range []string{"cache-http", "publisher"} {
		if a, b := created("kubo-a"), created(svc); a.After(b) {
			t.Errorf("kubo-a was created at %v, after %s (%v): the volume was not mounted by kubo-a first", a, svc, b)
		}
	}

	// By copy (the default): every NAR pinned in kubo-a, none by reference.
	checkByCopy(t, client, infos)

	// Stock Nix fetches from the stack: the cache over HTTP, then through a
	// substituter on the host that reads NARs from kubo-a over IPFS.
	checkStockNixCopyNS(t, e, n, top, closure, cache)
	subAddr, metricsAddr := "127.0.0.1:8485", "127.0.0.1:9495"
	sub := exec.Command(filepath.Join(bin, "nix-ipfs"), "substituter", "--upstream", cache,
		"--kubo-api", "http://127.0.0.1:5001", "--listen", subAddr, "--metrics-addr", metricsAddr,
		"--nar-spool-dir", t.TempDir(), "--log-format", "console")
	sub.Env = cleanEnv()
	sub = e.inNS(sub)
	subLog, _ := os.Create(filepath.Join(work, "substituter.log"))
	sub.Stdout, sub.Stderr = subLog, subLog
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subDone := make(chan struct{})
	go func() { sub.Wait(); close(subDone) }()
	defer func() { sub.Process.Kill(); <-subDone; subLog.Close() }()
	testenv.Eventually(t, time.Minute, "the substituter answering", func() bool {
		select {
		case <-subDone:
			t.Fatalf("the substituter exited:\n%s", tailFile(subLog.Name(), 20))
		default:
		}
		code, _ := get("http://" + subAddr + "/nix-cache-info")
		return code == 200
	})
	checkStockNixCopyNS(t, e, n, top, closure, "http://"+subAddr)
	step("stock Nix copied from the stack")
	_, m := get("http://" + metricsAddr + "/metrics")
	if got := metricSum(string(m), `nixipfs_substituter_nars_total{reason="",source="ipfs"}`); got < float64(len(closure)) {
		t.Errorf("the substituter took %v of %d NARs from IPFS:\n%s\n%s", got, len(closure), grepLines(string(m), "nars_total"), tailFile(subLog.Name(), 20))
	}
}

// hostNetworkCompose writes docker-compose.yml with host networking: the
// services with ports of their own get network_mode host and lose their
// port mappings (docker refuses both at once, and docker-compose 1.x cannot
// reset a list from an override file); the publisher, with no service
// names to resolve, reaches NATS on loopback; kubo-a runs one more init
// script, hostnet. Everything else is the file as it is.
func hostNetworkCompose(t *testing.T, root, work, hostnet string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	services := mapValue(doc.Content[0], "services")
	if services == nil {
		t.Fatal("docker-compose.yml has no services")
	}
	for _, name := range []string{"nats", "kubo-a", "cache-http"} {
		svc := mapValue(services, name)
		if svc == nil {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
		mapDelete(svc, "ports")
		mapSet(svc, "network_mode", &yaml.Node{Kind: yaml.ScalarNode, Value: "host"})
	}
	pub := mapValue(services, "publisher")
	if env := mapValue(pub, "environment"); env != nil {
		mapSet(env, "NIX_IPFS_NATS_URL", &yaml.Node{Kind: yaml.ScalarNode, Value: "nats://127.0.0.1:4222"})
	} else {
		t.Fatal("publisher has no environment map")
	}
	vols := mapValue(mapValue(services, "kubo-a"), "volumes")
	if vols == nil {
		t.Fatal("kubo-a has no volumes")
	}
	vols.Content = append(vols.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: hostnet + ":/container-init.d/099-host-network.sh:ro"})
	// No project network either: compose would make a bridge for it.
	mapSet(doc.Content[0], "networks", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "default"},
		{Kind: yaml.MappingNode, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "name"}, {Kind: yaml.ScalarNode, Value: "host"},
			{Kind: yaml.ScalarNode, Value: "external"}, {Kind: yaml.ScalarNode, Value: "true", Tag: "!!bool"},
		}},
	}})
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(work, "docker-compose.host-network.yml")
	if err := os.WriteFile(name, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapDelete(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func mapSet(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
}

// buildProjectImage builds nix-ipfs:latest from the Dockerfile's final
// stage, with the file system its build stage makes (scripts/image-root.sh)
// made here instead: no golang image can be pulled.
func buildProjectImage(t *testing.T, e *dockerEngine, root, ctx string) {
	t.Helper()
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(df), "RUN scripts/image-root.sh /out") {
		t.Fatal("the Dockerfile's build stage no longer makes the image with scripts/image-root.sh /out")
	}
	final := finalStage(df)
	if !strings.HasPrefix(final, "FROM scratch") {
		t.Fatalf("the Dockerfile's final stage is not FROM scratch:\n%s", final)
	}
	// ADD of a tar, not COPY: COPY --from keeps the owners of the build
	// stage's files (nix-ipfs's /data/cache), COPY from a context does not.
	final = strings.Replace(final, "COPY --from=build /out/ /", "ADD out.tar /", 1)
	if strings.Contains(final, "--from=") || strings.Contains(final, "\nRUN ") {
		t.Fatalf("the Dockerfile's final stage takes more than /out from the build stage:\n%s", final)
	}
	cmd := exec.Command(filepath.Join(root, "scripts/image-root.sh"), filepath.Join(ctx, "out"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image-root.sh: %v\n%s", err, out)
	}
	if out, err := exec.Command("tar", "-C", filepath.Join(ctx, "out"), "--numeric-owner", "-cf", filepath.Join(ctx, "out.tar"), ".").CombinedOutput(); err != nil {
		t.Fatalf("tar the image's file system: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(final), 0o644)
	e.run(t, "build", "-q", "-t", composeProjectImage, ctx)
}

// buildNATSImage: the nats image (its scratch variant, which the tag names
// on Linux) is nats-server at /nats-server, its entrypoint, with a default
// config the compose file's command replaces.
func buildNATSImage(t *testing.T, e *dockerEngine, natsBin, ctx string) {
	t.Helper()
	out, err := exec.Command(natsBin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), strings.TrimPrefix(composeNATSVersion, "v")) {
		t.Fatalf("%s --version: %v %s (want %s)", natsBin, err, out, composeNATSVersion)
	}
	os.MkdirAll(ctx, 0o755)
	r := newRootfs(t, filepath.Join(ctx, "rootfs.tar"))
	r.copyFile("/nats-server", natsBin, 0o755)
	r.file("/nats-server.conf", 0o644, []byte("port: 4222\nmonitor_port: 8222\n"))
	r.dir("/tmp", 0o1777, 0, 0)
	if err := r.close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(`FROM scratch
ADD rootfs.tar /
EXPOSE 4222 8222 6222
ENTRYPOINT ["/nats-server"]
CMD ["--config", "nats-server.conf"]
`), 0o644)
	e.run(t, "build", "-q", "-t", composeNATSImage, ctx)
}

// buildKuboImage: the ipfs/kubo image's entrypoint is kubo's own
// bin/container_daemon (as start_ipfs, under tini): as root it makes the
// repo writable for the ipfs user (uid 1000) and restarts itself as that
// user through gosu; it inits $IPFS_PATH=/data/ipfs with $IPFS_PROFILE and
// the API and gateway on all interfaces when there is no repo, runs
// /container-init.d/*.sh on every start, then `exec ipfs "$@"` with the
// image's default command. The stand-in runs those very scripts from kubo's
// module source, with the same kubo binary, on busybox's shell as the
// upstream image does.
func buildKuboImage(t *testing.T, e *dockerEngine, ctx string) {
	t.Helper()
	ipfsBin := testenv.NeedProgram(t, "ipfs")
	busybox := testenv.NeedProgram(t, "busybox")
	gosu := testenv.NeedProgram(t, "gosu")
	tini := testenv.NeedProgram(t, "tini-static")
	if out, err := exec.Command(ipfsBin, "version", "--number").Output(); err != nil || strings.TrimSpace(string(out)) != composeKuboVersion {
		t.Fatalf("ipfs version: %v %q, want %s (the compose file's %s)", err, out, composeKuboVersion, composeKuboImage)
	}
	src, err := exec.Command("go", "mod", "download", "-json", "github.com/ipfs/kubo@v"+composeKuboVersion).Output()
	if err != nil {
		t.Fatalf("kubo's module source (for its container scripts): %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(src, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json kubo: %v %s", err, src)
	}

	os.MkdirAll(ctx, 0o755)
	r := newRootfs(t, filepath.Join(ctx, "rootfs.tar"))
	for _, d := range []string{"/bin", "/sbin", "/usr", "/usr/local", "/usr/local/bin", "/etc", "/data", "/lib", "/lib64", "/usr/lib"} {
		r.dir(d, 0o755, 0, 0)
	}
	r.dir("/tmp", 0o1777, 0, 0)
	// adduser -D -h $IPFS_PATH -u 1000 -G users ipfs; chown ipfs:users ...
	for _, d := range []string{"/data/ipfs", "/ipfs", "/ipns", "/mfs", "/container-init.d"} {
		r.dir(d, 0o755, 1000, 100)
	}
	r.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nipfs:x:1000:100:Linux User,,,:/data/ipfs:/bin/sh\n"))
	r.file("/etc/group", 0o644, []byte("root:x:0:\nusers:x:100:ipfs\n"))
	libs := map[string]bool{}
	r.binary("/bin/busybox", busybox, libs)
	for _, applet := range []string{"sh", "id", "test", "[", "chown", "chmod", "find", "sort", "xargs", "printf", "install", "echo", "cat", "ls", "env"} {
		r.symlink("/bin/"+applet, "busybox")
	}
	r.binary("/sbin/gosu", gosu, libs)
	r.binary("/sbin/tini", tini, libs)
	r.binary("/usr/local/bin/ipfs", ipfsBin, libs)
	r.copyFile("/usr/local/bin/start_ipfs", filepath.Join(mod.Dir, "bin/container_daemon"), 0o755)
	r.copyFile("/usr/local/bin/container_init_run", filepath.Join(mod.Dir, "bin/container_init_run"), 0o755)
	if err := r.close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(`FROM scratch
ADD rootfs.tar /
EXPOSE 4001 4001/udp 5001 8080 8081
ENV IPFS_PATH=/data/ipfs
VOLUME /data/ipfs
ENV GOLOG_LOG_LEVEL=""
ENTRYPOINT ["/sbin/tini", "--", "/usr/local/bin/start_ipfs"]
CMD ["daemon", "--migrate=true", "--agent-version-suffix=docker"]
`), 0o644)
	e.run(t, "build", "-q", "-t", composeKuboImage, ctx)
}

// checkRunsAs checks that the container's process (its pid 1, the worker
// itself: the image has no init) runs with uid and gid, every one of its
// real, effective, saved and file-system ids, and in no group of root's.
func checkRunsAs(t *testing.T, e *dockerEngine, id, svc string, uid int) {
	t.Helper()
	pid := strings.TrimSpace(e.run(t, "inspect", "-f", "{{.State.Pid}}", id))
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("%s: %v", svc, err)
	}
	status := string(b)
	ids := fmt.Sprintf("\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid)
	if !strings.Contains(status, "\nUid:"+ids) || !strings.Contains(status, "\nGid:"+ids) {
		t.Errorf("%s (pid %s) does not run as uid and gid %d:\n%s", svc, pid, uid, grepLines(status, "id:"))
	}
	for _, g := range strings.Fields(strings.TrimPrefix(grepLines(status, "Groups:"), "Groups:")) {
		if g == "0" {
			t.Errorf("%s (pid %s) is in group 0: %s", svc, pid, grepLines(status, "Groups:"))
		}
	}
	t.Logf("%s runs as %s", svc, strings.Join(strings.Fields(grepLines(status, "Uid:")), " "))
}

// checkPublisherMounts checks the publisher's view: its signing key is
// uid's alone (mode 400: readable by it, by no other user in the
// container), and /nix, the store and the database, is mounted read-only.
func checkPublisherMounts(t *testing.T, e *dockerEngine, id string, uid int) {
	t.Helper()
	pid := strings.TrimSpace(e.run(t, "inspect", "-f", "{{.State.Pid}}", id))
	var st syscall.Stat_t
	key := "/proc/" + pid + "/root/run/secrets/signing-key"
	if err := syscall.Stat(key, &st); err != nil {
		t.Fatalf("the publisher's signing key: %v", err)
	}
	if int(st.Uid) != uid || st.Mode&0o7777 != 0o400 {
		t.Errorf("the publisher's /run/secrets/signing-key is uid %d mode %04o, want uid %d mode 0400", st.Uid, st.Mode&0o7777, uid)
	}
	b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	nix := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[4], "/nix/") {
			continue
		}
		nix++
		if !strings.HasPrefix(f[5], "ro,") && f[5] != "ro" {
			t.Errorf("the publisher's %s is mounted %s, not read-only", f[4], f[5])
		}
	}
	if nix < 2 {
		t.Errorf("the publisher has %d mounts under /nix, want the store and the database:\n%s", nix, b)
	}
}

// checkCacheOwner checks the cache volume as the host sees it: the volume
// itself and every file the publisher wrote there belong to uid, and the
// closure's narinfos are among them.
func checkCacheOwner(t *testing.T, e *dockerEngine, id string, uid, paths int) {
	t.Helper()
	dir := strings.TrimSpace(e.run(t, "inspect", "-f", `{{range .Mounts}}{{if eq .Destination "/data/cache"}}{{.Source}}{{end}}{{end}}`, id))
	if dir == "" {
		t.Fatal("the publisher has no mount at /data/cache")
	}
	narinfos, wrong := 0, 0
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st := info.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != uid {
			if wrong++; wrong <= 5 {
				t.Errorf("cache volume: %s is owned by %d:%d, want %d:%d", strings.TrimPrefix(p, dir), st.Uid, st.Gid, uid, uid)
			}
		}
		if strings.HasSuffix(p, ".narinfo") {
			narinfos++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk the cache volume: %v", err)
	}
	if wrong > 5 {
		t.Errorf("cache volume: %d files in all are not owned by %d", wrong, uid)
	}
	if narinfos < paths {
		t.Errorf("the cache volume has %d narinfos, want at least %d", narinfos, paths)
	}
}

// checkByCopy: kubo-a holds every NAR of the closure pinned, and its
// filestore references nothing: the publisher added by copy, with its
// default chunker (compose gives no --ipfs-nocopy).
func checkByCopy(t *testing.T, client *http.Client, infos map[string]*narinfo.NarInfo) {
	t.Helper()
	resp, err := client.Post("http://127.0.0.1:5001/api/v0/filestore/verify", "", nil)
	if err != nil {
		t.Fatalf("filestore/verify: %v", err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ent struct{ FilePath string }
		if err := dec.Decode(&ent); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("filestore/verify answer: %v", err)
		}
		t.Errorf("kubo-a references %s: the default adds by copy", ent.FilePath)
	}
	for p, ni := range infos {
		resp, err := client.Post("http://127.0.0.1:5001/api/v0/pin/ls?type=recursive&arg="+ni.IPFSHash, "", nil)
		if err != nil {
			t.Fatalf("pin/ls: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: CID %s not pinned in kubo-a (pin/ls: HTTP %d)", p, ni.IPFSHash, resp.StatusCode)
		}
	}
}

// checkStockNixCopyNS is checkStockNixCopy from inside the engine's
// namespace, where the stack's ports are.
func checkStockNixCopyNS(t *testing.T, e *dockerEngine, n *testenv.Nix, top string, closure []string, from string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "store-c")
	cmd := e.inNS(n.Command("nix", "copy", "--from", from, "--to", dest,
		"--option", "trusted-public-keys", n.PublicKey, "--option", "require-sigs", "true", top))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stock nix copy --from %s: %v\n%s", from, err, out)
	}
	for _, p := range closure {
		want, err := exec.Command("nix-store", "--dump", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command("nix-store", "--dump", filepath.Join(dest, p)).Output()
		if err != nil || string(got) != string(want) {
			t.Errorf("%s from %s: contents differ in the client store (%d vs %d bytes, %v)", p, from, len(got), len(want), err)
		}
	}
}

func metricSum(text, series string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			sum += f
		}
	}
	return sum
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
