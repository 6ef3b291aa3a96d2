package kubod

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

var settingLine = regexp.MustCompile(`^ipfs config --json (\S+) '([^']*)'$`)

// TestComposeScriptsMatchSettings: the container init scripts that
// docker-compose.yml mounts set exactly what Settings says for each role.
func TestComposeScriptsMatchSettings(t *testing.T) {
	for _, r := range []Role{Origin, Mirror, Client} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubo", string(r)+".sh"))
		if err != nil {
			t.Fatal(err)
		}
		var got []Setting
		for _, line := range strings.Split(string(data), "\n") {
			if m := settingLine.FindStringSubmatch(line); m != nil {
				got = append(got, Setting{m[1], m[2]})
			} else if strings.HasPrefix(line, "ipfs ") {
				t.Errorf("%s.sh: line %q is not `ipfs config --json KEY 'VALUE'`", r, line)
			}
		}
		want := Settings(r)
		if len(got) != len(want) {
			t.Errorf("%s.sh sets %d keys, Settings(%s) %d", r, len(got), r, len(want))
			continue
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s.sh line %d: %v, want %v", r, i, got[i], want[i])
			}
		}
	}
	compose, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{Origin, Mirror} {
		if !strings.Contains(string(compose), "./deploy/kubo/"+string(r)+".sh:/container-init.d/") {
			t.Errorf("docker-compose.yml does not mount deploy/kubo/%s.sh", r)
		}
	}
}

// TestSettingsAcceptedByKubo: kubo (the version install-deps.sh installs)
// accepts every role's settings and starts with them.
func TestSettingsAcceptedByKubo(t *testing.T) {
	for _, r := range []Role{Origin, Mirror, Client} {
		t.Run(string(r), func(t *testing.T) {
			var opts []testenv.KuboOption
			for _, s := range Settings(r) {
				opts = append(opts, testenv.KuboConfig(s.Key, s.JSON))
			}
			k := testenv.StartKubo(t, opts...)
			var cfg map[string]any
			if err := json.Unmarshal([]byte(k.IPFS(t, "config", "show")), &cfg); err != nil {
				t.Fatal(err)
			}
			for _, s := range Settings(r) {
				var v any = cfg
				for _, part := range strings.Split(s.Key, ".") {
					m, _ := v.(map[string]any)
					v = m[part]
				}
				var want any
				json.Unmarshal([]byte(s.JSON), &want)
				if gb, _ := json.Marshal(v); string(gb) != mustJSON(want) {
					t.Errorf("%s = %s after start, want %s", s.Key, gb, s.JSON)
				}
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
