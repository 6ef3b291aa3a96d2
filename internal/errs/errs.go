// Package errs gives errors a kind, and the kind decides what a worker does
// with the event that caused it: an Invalid event is terminated and
// dead-lettered at once, a Transient failure is retried with backoff, and a
// Corrupt store path is refused and reported like an invalid event.
package errs

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller should do about it.
type Kind int

const (
	// Other is an error of no known kind. Workers treat it as Transient: an
	// unknown failure is retried, and dead-lettered once retries run out.
	Other Kind = iota
	// Invalid input: retrying cannot help.
	Invalid
	// Transient failure of something outside: NATS, kubo, the disk, the store.
	Transient
	// Corrupt data: the store's bytes do not match what the store recorded.
	Corrupt
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case Transient:
		return "transient"
	case Corrupt:
		return "corrupt"
	default:
		return "other"
	}
}

// Error is an error with a kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// E wraps err with kind k. A nil err stays nil.
func E(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// Errorf formats an error of kind k; %w works as in fmt.Errorf.
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the kind of the outermost kinded error in err's chain.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Other
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
