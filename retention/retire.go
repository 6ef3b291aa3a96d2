package retention

import (
	"encoding/json"
	"iter"

	"github.com/nix-ipfs/nix-ipfs/retention/roots"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// RootID names a root in its Roots.
type RootID = roots.ID

// Retirements are the paths a plan retires, sorted by store path: 12
// bytes a path (its id in the index, its root and two flags) where a
// Retirement is about 170, made whole when read (issue 24).
type Retirements struct {
	ix     *Index
	roots  *Roots
	policy *Policy
	list   []retireRef
	// made is a list made by hand (RetirementsOf), instead of list.
	made []Retirement
	// placeholder stands for the list in a plan's JSON (writePlanJSON).
	placeholder string
}

type retireRef struct {
	id    int32
	root  RootID // -1: none
	flags uint8
}

const (
	// cidKept: a kept path has the same CID, which stays pinned.
	cidKept = 1 << iota
	// removeNAR: no kept path shares the NAR file.
	removeNAR
)

// RetirementsOf is a plan's list of the given retirements.
func RetirementsOf(rs ...Retirement) Retirements { return Retirements{made: rs} }

// Len is how many paths leave.
func (r Retirements) Len() int {
	if r.made != nil {
		return len(r.made)
	}
	return len(r.list)
}

// At is the i-th retirement.
func (r Retirements) At(i int) Retirement {
	if r.made != nil {
		return r.made[i]
	}
	ref := r.list[i]
	e := &r.ix.entries[ref.id]
	sp := r.ix.storePath(ref.id)
	out := Retirement{StorePath: sp, HashPart: storepath.HashPart(sp), URL: r.ix.url(ref.id), NarHash: r.ix.narHash(e), NarSize: e.narSize,
		FileSize: e.fileSize, Journal: e.retiring(), InfoSize: int64(e.infoSize), RemoveNAR: ref.flags&removeNAR != 0}
	if ref.flags&cidKept == 0 {
		out.CID = r.ix.cid(e)
	}
	if ref.root >= 0 {
		// Formatted when asked (Retirement.Why): a reason per root is
		// a string per path where every path is built.
		out.rootJob, out.rootBuilt, out.policy = r.roots.Job(ref.root), r.roots.LastBuilt(ref.root), r.policy
	} else {
		out.Reason = unrootedReason(r.policy)
	}
	return out
}

// All yields the retirements in order.
func (r Retirements) All() iter.Seq2[int, Retirement] { return all(r.Len(), r.At) }

// MarshalJSON writes the list as a JSON array (writePlanJSON writes a
// long one a retirement at a time instead).
func (r Retirements) MarshalJSON() ([]byte, error) {
	if r.placeholder != "" {
		return []byte("[" + r.placeholder + "]"), nil
	}
	if r.made == nil && r.list == nil {
		return []byte("null"), nil
	}
	return marshalList(r.Len(), func(i int) any { return r.At(i) })
}

// UnmarshalJSON reads a list MarshalJSON wrote (a plan read back, as
// prune --json prints it).
func (r *Retirements) UnmarshalJSON(b []byte) error {
	var made []Retirement
	if err := json.Unmarshal(b, &made); err != nil {
		return err
	}
	*r = Retirements{made: made}
	return nil
}
