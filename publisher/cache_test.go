package publisher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

func TestLoadSecretKeyRefusesReadableKey(t *testing.T) {
	sk, _, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "key")
	os.WriteFile(f, []byte(sk.String()+"\n"), 0o600)
	if _, err := LoadSecretKey(f); err != nil {
		t.Fatalf("mode 600: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(f, mode)
		_, err := LoadSecretKey(f)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(f, 0o600)
	os.WriteFile(f, []byte("test-1:not-base64-secret-material"), 0o600)
	_, err = LoadSecretKey(f)
	if err == nil || strings.Contains(err.Error(), "secret-material") {
		t.Errorf("bad key: %v (must not quote the file)", err)
	}
}
