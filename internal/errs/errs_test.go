package errs

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOfAndWorst(t *testing.T) {
	inv := Errorf(Invalid, "bad")
	cfg := E(Config, errors.New("credentials"))
	wrapped := fmt.Errorf("outer: %w", E(NotYet, errors.New("not copied yet")))
	if KindOf(wrapped) != NotYet || Classified(errors.New("x")) || !Classified(wrapped) {
		t.Fatalf("KindOf(wrapped) = %v", KindOf(wrapped))
	}
	for _, c := range []struct {
		errs []error
		want Kind
	}{
		{nil, Transient},
		{[]error{E(Transient, errors.New("t"))}, Transient},
		{[]error{E(Transient, errors.New("t")), errors.New("unknown")}, Other},
		{[]error{errors.New("unknown"), wrapped}, NotYet},
		{[]error{wrapped, inv}, Invalid},
		{[]error{inv, E(Corrupt, errors.New("c"))}, Corrupt},
		{[]error{E(Corrupt, errors.New("c")), cfg, nil}, Config},
	} {
		if got := Worst(c.errs...); got != c.want {
			t.Errorf("Worst(%v) = %v, want %v", c.errs, got, c.want)
		}
	}
	for k := Other; k <= Config; k++ {
		if k != Other && k.String() == "other" {
			t.Errorf("kind %d has no name", k)
		}
	}
}
