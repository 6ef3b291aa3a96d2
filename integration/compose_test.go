package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// No Docker engine runs here and no image can be pulled, so the compose file
// is proven another way: the compose-spec library loads it (every profile),
// and every nix-ipfs service's command and environment are run through the
// real binary with --config-check, which exits non-zero on any flag,
// variable or value the binary does not accept.
func TestComposeFile(t *testing.T) {
	bin := testenv.Binaries(t)
	root, _ := filepath.Abs("..")
	opts, err := composecli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		composecli.WithWorkingDirectory(root),
		composecli.WithProfiles([]string{"*"}),
		composecli.WithEnv([]string{}),
		composecli.WithName("nix-ipfs"),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}

	checked := map[string]bool{}
	for name, svc := range project.Services {
		for _, p := range svc.Ports {
			checkPort(t, name, p)
		}
		if svc.Image != "nix-ipfs:latest" {
			continue
		}
		if len(svc.Command) == 0 {
			t.Errorf("%s: no command", name)
			continue
		}
		checked[svc.Command[0]] = true
		args := append(slices.Clone([]string(svc.Command)), "--config-check")
		cmd := exec.Command(filepath.Join(bin, "nix-ipfs"), args...)
		cmd.Env = cleanEnv()
		for k, v := range svc.Environment {
			if v != nil {
				cmd.Env = append(cmd.Env, k+"="+*v)
			}
			if strings.HasPrefix(k, "NIX_IPFS_") && !strings.Contains(helpOf(t, bin, svc.Command[0]), k) {
				t.Errorf("%s: environment %s is not a setting of nix-ipfs %s", name, k, svc.Command[0])
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: nix-ipfs %s rejects its compose settings: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		if strings.Contains(strings.Join(svc.Command, " "), "kubo-api") && !strings.HasPrefix(svc.NetworkMode, "service:kubo") {
			t.Errorf("%s talks to kubo's RPC API but does not share kubo's loopback", name)
		}
	}
	for _, want := range []string{"publisher", "mirror", "serve"} {
		if !checked[want] {
			t.Errorf("no compose service runs nix-ipfs %s", want)
		}
	}
	pub := project.Services["publisher"]
	ro := false
	for _, v := range pub.Volumes {
		if v.Target == "/nix/store" && v.ReadOnly {
			ro = true
		}
	}
	if !ro {
		t.Error("publisher does not mount /nix/store read-only")
	}
	if len(pub.Secrets) == 0 {
		t.Error("publisher gets the signing key other than as a secret")
	}
	checkComposeNocopyReady(t, project)
	checkComposeV1(t, root)
}

// checkComposeNocopyReady: the publisher adds NARs by copy with its default
// chunker (the reference-aware one: kubo's filestore could not keep it),
// and zero-copy is one flag away: kubo-a has its filestore enabled and sees
// the cache at the path the publisher writes it, under the parent of its
// IPFS_PATH (/data/ipfs in the ipfs/kubo image), the only place kubo's
// filestore takes files from.
func checkComposeNocopyReady(t *testing.T, project *types.Project) {
	t.Helper()
	pub, kubo := project.Services["publisher"], project.Services["kubo-a"]
	cacheDir := ""
	for _, a := range pub.Command {
		if v, ok := strings.CutPrefix(a, "--cache-dir="); ok {
			cacheDir = v
		}
	}
	for _, a := range pub.Command {
		if strings.HasPrefix(a, "--ipfs-nocopy") || strings.HasPrefix(a, "--chunker") {
			t.Errorf("publisher has %s: the default is by copy, with the reference-aware chunker", a)
		}
	}
	source := func(svc types.ServiceConfig, target string) string {
		for _, v := range svc.Volumes {
			if v.Target == target {
				return v.Source
			}
		}
		return ""
	}
	if cacheDir == "" || source(pub, cacheDir) == "" || source(pub, cacheDir) != source(kubo, cacheDir) {
		t.Errorf("the publisher's cache dir %q is not the same volume at the same path in kubo-a (%q vs %q)",
			cacheDir, source(pub, cacheDir), source(kubo, cacheDir))
	}
	if !strings.HasPrefix(cacheDir, "/data/") {
		t.Errorf("cache dir %q is outside /data, the parent of kubo's IPFS_PATH: the filestore would refuse it", cacheDir)
	}
	init := source(kubo, "/container-init.d/010-nix-ipfs.sh")
	b, err := os.ReadFile(init)
	if err != nil || !strings.Contains(strings.ReplaceAll(string(b), "'", ""), "Experimental.FilestoreEnabled true") {
		t.Errorf("kubo-a's init script %q does not enable the filestore: %v", init, err)
	}
}

// checkComposeV1: Debian's docker-compose (1.29) accepts the file too, for
// every profile. It needs no engine for `config`.
func checkComposeV1(t *testing.T, root string) {
	t.Helper()
	dc := testenv.NeedProgram(t, "docker-compose")
	for _, profile := range []string{"", "mirror"} {
		args := []string{"-f", filepath.Join(root, "docker-compose.yml")}
		if profile != "" {
			args = append(args, "--profile", profile)
		}
		cmd := exec.Command(dc, append(args, "config", "--quiet")...)
		cmd.Env = cleanEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose 1.x (%s) refuses docker-compose.yml (profile %q): %v\n%s", dcVersion(dc), profile, err, out)
		}
	}
}

func dcVersion(dc string) string {
	out, _ := exec.Command(dc, "version", "--short").Output()
	return strings.TrimSpace(string(out))
}

// checkPort: kubo's RPC API (5001) is never published, and everything but
// the ports meant for other hosts binds to loopback.
func checkPort(t *testing.T, svc string, p types.ServicePortConfig) {
	t.Helper()
	if p.Target == 5001 {
		t.Errorf("%s publishes kubo's RPC API", svc)
	}
	public := map[uint32]bool{4001: true, 4222: true, 8080: true}
	if !public[p.Target] && p.HostIP != "127.0.0.1" {
		t.Errorf("%s publishes port %d beyond loopback", svc, p.Target)
	}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NIX_IPFS_") {
			env = append(env, kv)
		}
	}
	return env
}

func helpOf(t *testing.T, bin, cmd string) string {
	out, _ := exec.Command(filepath.Join(bin, "nix-ipfs"), cmd, "--help").CombinedOutput()
	return string(out)
}
