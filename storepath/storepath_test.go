package storepath

import (
	"path"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := []string{
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12",
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-a+b=c?d_e.f",
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-.dotfile",
	}
	for _, p := range good {
		if err := Validate(DefaultStoreDir, p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	bad := []string{
		"", "/", "/nix/store", "/nix/store/", "nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x",
		"/nix/store/../etc/passwd", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-..",
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x/sub", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-",
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7e-x", // 'e' is not in Nix's base-32
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-sp ace", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-ü",
		"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-" + strings.Repeat("a", 212),
		"/other/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x", "/nix/store//0c6kzph7l0dcbfmjap64f0czdafn3b7x-x",
	}
	for _, p := range bad {
		if err := Validate(DefaultStoreDir, p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	if err := Validate("relative", good[0]); err == nil {
		t.Error("relative store dir accepted")
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12")
	f.Add("/nix/store/../x")
	f.Fuzz(func(t *testing.T, p string) {
		if Validate(DefaultStoreDir, p) != nil {
			return
		}
		// Anything accepted stays inside the store directory.
		if path.Dir(path.Clean(p)) != DefaultStoreDir || path.Clean(p) != p {
			t.Fatalf("%q accepted but escapes %s", p, DefaultStoreDir)
		}
	})
}
