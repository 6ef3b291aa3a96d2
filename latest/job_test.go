package latest

import "testing"

// FuzzParseDrvName: the split always puts the name back together, and the
// version, when there is one, starts with a non-letter.
func FuzzParseDrvName(f *testing.F) {
	for _, s := range []string{"hello-2.12", "a-b-1", "", "-", "x-", "-1", "foo-bar"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, v := ParseDrvName(s)
		if v == "" && n != s && n+"-" != s {
			t.Fatalf("%q -> %q, %q", s, n, v)
		}
		if v != "" && (n+"-"+v != s || isAlpha(v[0])) {
			t.Fatalf("%q -> %q, %q", s, n, v)
		}
	})
}
