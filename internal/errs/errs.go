// Package errs gives errors a kind, and the kind decides what the caller
// does with the work that failed. For a worker handling an event:
//
//   - Invalid or Corrupt: retrying cannot help; the event is terminated and
//     dead-lettered at once with the reason.
//   - Transient: something outside failed (NATS, kubo, the disk); retried
//     with backoff for as long as it takes.
//   - NotYet: what the event needs is not there yet (a path a remote
//     builder has not copied over, a CID no reachable node offers); retried
//     with backoff a bounded number of times, then dead-lettered as
//     exhausted, so a thing that never comes leaves a trace.
//   - Config: the deployment is wrong (credentials, an address that is not
//     kubo's RPC API, a filestore that is off); no event can succeed until
//     an operator acts, so the worker gives the event back and stops with
//     the message, instead of dead-lettering every event as exhausted.
//   - Other: not classified yet. Treated as NotYet, and logged as
//     unclassified: a kind is missing somewhere.
package errs

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller should do about it.
type Kind int

const (
	// Other is an error nobody has classified. Workers treat it as NotYet
	// and say it is unclassified; it is never chosen on purpose.
	Other Kind = iota
	// Invalid input: retrying cannot help.
	Invalid
	// Transient failure of something outside: NATS, kubo, the disk, the store.
	Transient
	// Corrupt data: the bytes do not match what was recorded or signed.
	Corrupt
	// NotYet: what the work needs is not there yet and may come; retried a
	// bounded number of times.
	NotYet
	// Config: the deployment is misconfigured; only an operator can fix it,
	// and the worker stops.
	Config
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case Transient:
		return "transient"
	case Corrupt:
		return "corrupt"
	case NotYet:
		return "not_yet"
	case Config:
		return "config"
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

// Classified reports whether err carries a kind someone chose.
func Classified(err error) bool { return KindOf(err) != Other }

// Worst returns the kind among errs that decides what happens to work that
// failed in several ways at once: Config (stop) over Corrupt and Invalid
// (give up) over NotYet and Other (bounded retries) over Transient (retry).
func Worst(errs ...error) Kind {
	rank := map[Kind]int{Transient: 0, Other: 1, NotYet: 2, Invalid: 3, Corrupt: 4, Config: 5}
	worst, seen := Transient, false
	for _, e := range errs {
		if e == nil {
			continue
		}
		if k := KindOf(e); !seen || rank[k] > rank[worst] {
			worst, seen = k, true
		}
	}
	return worst
}
