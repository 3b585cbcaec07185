package fence

import (
	"cmp"
	"iter"
	"slices"
	"time"

	"github.com/gpusync/gpusync/lockdep"
)

// Unwrap yields the leaf fences inside f: for a chain, each pending point's payload,
// newest first; for an array, its fences in index order; a plain fence yields itself.
// One level of array is flattened, as arrays do not nest. Models
// dma_fence_unwrap_for_each().
func Unwrap(f *Fence) iter.Seq[*Fence] {
	return func(yield func(*Fence) bool) {
		if f == nil {
			return
		}
		points := iter.Seq[*Fence](func(y func(*Fence) bool) { y(f) })
		if c := AsChain(f); c != nil {
			points = c.All()
		}
		for p := range points {
			inner := Contained(p)
			if a := AsArray(inner); a != nil {
				for _, leaf := range a.fences {
					if !yield(leaf) {
						return
					}
				}
				continue
			}
			if !yield(inner) {
				return
			}
		}
	}
}

// Merge returns one fence that signals when all the given fences have: their
// unsignalled leaves (see Unwrap), with at most one fence per context (the later
// one). It returns a signalled stub whose timestamp is the latest of the
// signalled leaves when nothing is pending, the fence itself when one is left, and an
// array on a new context otherwise; each is a reference of the caller's own, as in
// the kernel, so the fence left alone gets a Get. The inputs are not changed.
// Models dma_fence_unwrap_merge().
func Merge(fences ...*Fence) *Fence {
	pending := make([]*Fence, 0, len(fences))
	var latest time.Time
	leaf := func(f *Fence) {
		if f.IsSignaled() {
			if ts, _ := f.Timestamp(); ts.After(latest) {
				latest = ts
			}
			return
		}
		pending = append(pending, f)
	}
	for _, f := range fences {
		if f == nil {
			continue
		}
		if AsChain(f) == nil && AsArray(f) == nil {
			leaf(f) // a plain fence: no iterator needed
			continue
		}
		for l := range Unwrap(f) {
			leaf(l)
		}
	}
	pending = Dedup(pending)
	// A reference on each fence kept, as dma_fence_unwrap_merge() gets each: the
	// caller's for a single fence (so that a kernel-style Put of the result does
	// not drop the input's), the array's otherwise. A leaf released since the walk
	// saw it (its chain point was unlinked and dropped) has signalled: it is left
	// out rather than brought back.
	kept := pending[:0]
	for _, f := range pending {
		if f.tryGet() {
			kept = append(kept, f)
		}
	}
	pending = kept
	switch len(pending) {
	case 0:
		return NewSignaled(latest)
	case 1:
		return pending[0]
	}
	return &NewArray(pending, AllocContexts(1), 1, false).Fence
}

// Dedup sorts fences by context and keeps only the latest fence of each context,
// returning the shortened slice (it reuses the backing array). Models
// dma_fence_dedup_array().
func Dedup(fences []*Fence) []*Fence {
	slices.SortFunc(fences, func(a, b *Fence) int {
		if c := cmp.Compare(a.ctx.id, b.ctx.id); c != 0 {
			return c
		}
		switch {
		case a == b:
			return 0
		case IsLater(a, b):
			return -1
		case IsLater(b, a):
			return 1
		}
		return 0
	})
	out := fences[:0]
	for i, f := range fences {
		if i > 0 && f.ctx.id == out[len(out)-1].ctx.id {
			continue
		}
		out = append(out, f)
	}
	clear(fences[len(out):])
	return out
}

// checkerOf picks the lockdep checker for a container: the first fence's.
func checkerOf(fences []*Fence) *lockdep.Checker {
	for _, f := range fences {
		if f != nil && f.ctx.checker != nil {
			return f.ctx.checker
		}
	}
	return nil
}
