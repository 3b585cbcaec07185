package resv

import (
	"context"
	"fmt"
	"iter"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
)

// An Object is a reservation object: the fences of a buffer, each with a usage, and
// the ww lock that serialises changes to them. Implicit synchronisation is built on
// it: a new writer waits for the fences a Read query returns (readers and writers), a
// new reader for a Write query (writers), and eviction for everything (Bookkeep).
// Models struct dma_resv.
//
// Writers (Reserve, AddFence, ReplaceFences, CopyFences) need the lock. Readers need
// no lock: the fence list is published like an RCU pointer, and a lock-free reader
// (Iter) sees one consistent list, restarting if the list was replaced under it.
//
// Slots are reserved before fences are added (Reserve, then AddFence) because the
// add happens after the point of no return of a submission: the job is armed and its
// fence must be published, so the add must not fail or allocate. The reservation
// lapses at Unlock, as with CONFIG_DEBUG_MUTEXES in the kernel, so every add is
// preceded by a reserve in the same critical section. See Reserve for how exactly
// the model counts slots.
//
// Use NewObject; an Object must not be copied.
type Object struct {
	lock    *WWMutex
	checker *lockdep.Checker
	list    atomic.Pointer[fenceList] // replaced only by Reserve and CopyFences, under lock
	// max is guarded by lock: the entries AddFence may fill, appends included; the
	// largest count a Reserve of this critical section asked for, never above the
	// list's max.
	max int
}

// fenceList is one published list. Slots at index < num are valid and each is
// replaced atomically as a whole; num only grows, after the slot is written.
type fenceList struct {
	slots []atomic.Pointer[slot] // capacity of the list
	num   atomic.Int32
	// max is dma_resv_list.max_fences, guarded by the object's lock: the capacity
	// when allocated, cut to num at Unlock (dma_resv_reset_max_fences). Reserve
	// reuses the list only while the request fits within it.
	max int
}

type slot struct {
	f     *fence.Fence
	usage Usage
}

// NewObject returns an unlocked reservation object with no fences, reporting to
// checker (nil: lockdep.Default). Models dma_resv_init().
func NewObject(checker *lockdep.Checker) *Object {
	o := &Object{lock: NewWWMutex(ReservationClass, checker), checker: checker}
	o.list.Store(&fenceList{})
	return o
}

func (o *Object) lockdep() *lockdep.Checker {
	if o.checker != nil {
		return o.checker
	}
	return lockdep.Default
}

// Lock locks o in acquire context a (nil: a single object, no deadlock avoidance).
// Returns as WWMutex.Lock does. Models dma_resv_lock_interruptible().
func (o *Object) Lock(ctx context.Context, a *AcquireCtx) error { return o.lock.Lock(ctx, a) }

// LockSlow locks o after a back-off. Models dma_resv_lock_slow_interruptible().
func (o *Object) LockSlow(ctx context.Context, a *AcquireCtx) error {
	return o.lock.LockSlow(ctx, a)
}

// TryLock locks o without an acquire context if it is free. Models
// dma_resv_trylock().
func (o *Object) TryLock() bool { return o.lock.TryLock(nil) }

// Unlock unlocks o. Unused fence slots lapse: the next Reserve allocates a new
// list. Models dma_resv_unlock() with CONFIG_DEBUG_MUTEXES, that is with
// dma_resv_reset_max_fences().
func (o *Object) Unlock() {
	l := o.list.Load()
	l.max = int(l.num.Load())
	o.max = l.max
	o.lock.Unlock()
}

// IsLocked reports whether anyone holds o's lock. Models dma_resv_is_locked().
func (o *Object) IsLocked() bool { return o.lock.IsLocked() }

// LockingCtx returns the acquire context holding o, if any. Models
// dma_resv_locking_ctx().
func (o *Object) LockingCtx() *AcquireCtx { return o.lock.Owner() }

// AssertHeld reports to lockdep unless the calling goroutine holds o. Models
// dma_resv_assert_held().
func (o *Object) AssertHeld() { o.lock.dep.AssertHeld() }

// WWMutex returns o's lock, for code that locks it with other ww mutexes. Models
// dma_resv.lock.
func (o *Object) WWMutex() *WWMutex { return o.lock }

// held checks that o is locked (and tells lockdep to check it is locked by us).
func (o *Object) held() error {
	if !o.lock.IsLocked() {
		return ErrNotLocked
	}
	o.AssertHeld()
	return nil
}

// Reserve makes room for n more AddFence calls that append, so that they cannot
// fail: after it, the object may hold the fences it has now plus n (reservations
// do not add up: a second Reserve(n) asks for the same room again). The lock must
// be held. n == 0 is an error wrapping ErrInvalid. Models
// dma_resv_reserve_fences() of a CONFIG_DEBUG_MUTEXES kernel.
//
// As in the kernel, the list is reused if the request fits its max_fences, else a
// new one is allocated (max(4, roundup_pow_of_two(n)) slots for the first, else
// max(num+n, 2*max_fences)) and published, dropping the entries whose fences have
// signalled; lock-free readers then restart. Since Unlock cuts max_fences to the
// number of fences, the first Reserve after an Unlock always allocates, as the
// debug kernel's does.
//
// The model differs in what AddFence may append: exactly what was reserved, where
// the kernel lets appends through up to the list's capacity, which is at least
// what was asked for and often more (the rounding above, plus the slab bucket
// ksize() reports, which the model does not round to). A driver that appends more
// than it reserved works in the kernel until the spare capacity runs out, at a
// BUG_ON that depends on the allocator and the object's history; the model refuses
// the first append beyond the reservation with ErrNoSlot, every time.
func (o *Object) Reserve(n int) error {
	if err := o.held(); err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("%w: reserve %d fence slots", ErrInvalid, n)
	}
	old := o.list.Load()
	num := int(old.num.Load())
	var size int
	if old.max > 0 {
		if num+n <= old.max {
			o.max = max(o.max, num+n)
			return nil
		}
		size = max(num+n, 2*old.max)
	} else {
		size = max(4, 1<<bits.Len(uint(n-1)))
	}
	nl := &fenceList{slots: make([]atomic.Pointer[slot], size), max: size}
	j := 0
	for i := range num {
		s := old.slots[i].Load()
		if s.f.IsSignaled() {
			continue
		}
		nl.slots[j].Store(s)
		j++
	}
	nl.num.Store(int32(j))
	o.list.Store(nl)
	o.max = j + n // an earlier reservation of this section fitted the old max, so it is less
	return nil
}

// AddFence adds f with usage u. If an entry of the same context with an equal or
// weaker usage holds an older fence, or any entry's fence has signalled, f takes
// that slot; otherwise it appends, which needs a slot reserved with Reserve in this
// critical section (else ErrNoSlot; see Reserve for how the model counts). The
// lock must be held. A long-running fence is refused (ErrLongRunning, reported to
// lockdep), as is a container (ErrContainer); on any error o is unchanged. Models
// dma_resv_add_fence().
func (o *Object) AddFence(f *fence.Fence, u Usage) error {
	if err := o.held(); err != nil {
		return err
	}
	if err := o.acceptable(f, u); err != nil {
		return err
	}
	if fence.AsArray(f) != nil || fence.AsChain(f) != nil {
		return ErrContainer
	}
	l := o.list.Load()
	num := int(l.num.Load())
	for i := range num {
		old := l.slots[i].Load()
		sameCtx := old.f.Context().ID() == f.Context().ID()
		if (sameCtx && old.usage >= u && fence.IsLaterOrSame(f, old.f)) || old.f.IsSignaled() {
			l.slots[i].Store(&slot{f: f, usage: u})
			return nil
		}
	}
	if num >= o.max || num >= len(l.slots) {
		return ErrNoSlot
	}
	l.slots[num].Store(&slot{f: f, usage: u})
	l.num.Store(int32(num + 1))
	return nil
}

// acceptable refuses what no reservation object may hold: no fence, a usage out of
// range, a long-running fence.
func (o *Object) acceptable(f *fence.Fence, u Usage) error {
	switch {
	case f == nil || u > Bookkeep:
		return ErrInvalid
	case f.IsLongRunning():
		o.lockdep().LongRunningInReservation(f.Describe())
		return ErrLongRunning
	}
	return nil
}

// ReplaceFences replaces every fence of context ctxID with replacement, now of
// usage u (which may be stronger or weaker). It needs no reservation. The lock must
// be held. A long-running replacement is refused as AddFence refuses it; a
// container (array or chain) is accepted, as dma_resv_replace_fences() has no
// check for one (only dma_resv_add_fence() warns). Models
// dma_resv_replace_fences().
func (o *Object) ReplaceFences(ctxID uint64, replacement *fence.Fence, u Usage) error {
	if err := o.held(); err != nil {
		return err
	}
	if err := o.acceptable(replacement, u); err != nil {
		return err
	}
	l := o.list.Load()
	for i := range int(l.num.Load()) {
		if l.slots[i].Load().f.Context().ID() == ctxID {
			l.slots[i].Store(&slot{f: replacement, usage: u})
		}
	}
	return nil
}

// Fences yields, in slot order, every fence with usage u or stronger, signalled ones
// included, with its usage. The lock must be held for the whole iteration: if the
// calling goroutine does not hold it, lockdep reports (KindAssert) and the walk
// goes on all the same, over the list published when it began, as
// dma_resv_iter_first() does after its dma_resv_assert_held(). Models
// dma_resv_for_each_fence().
func (o *Object) Fences(u Usage) iter.Seq2[*fence.Fence, Usage] {
	return func(yield func(*fence.Fence, Usage) bool) {
		o.AssertHeld()
		l := o.list.Load()
		for i := range int(l.num.Load()) {
			s := l.slots[i].Load()
			if s.usage <= u && !yield(s.f, s.usage) {
				return
			}
		}
	}
}

// GetFences returns the unsignalled fences with usage u or stronger, without the
// lock. The kernel hands back a reference on each; here memory is the garbage
// collector's and the reservation object holds no references, so none are taken:
// a caller that gives one of them to a container, which takes over a reference,
// passes f.Get(). Models dma_resv_get_fences().
func (o *Object) GetFences(u Usage) []*fence.Fence {
	var out []*fence.Fence
	for _, s := range o.snapshot(u) {
		out = append(out, s.f)
	}
	return out
}

// snapshot returns the unsignalled slots of usage u or stronger from one published
// list, read to its end without the list being replaced: a partial result from a
// replaced list is thrown away and the walk restarts, as an accumulating
// dma_resv_iter user must.
func (o *Object) snapshot(u Usage) []*slot {
	var out []*slot
	for {
		l := o.list.Load()
		out = out[:0]
		for i := range int(l.num.Load()) {
			if s := l.slots[i].Load(); s.usage <= u && !s.f.IsSignaled() {
				out = append(out, s)
			}
		}
		if o.list.Load() == l {
			return out
		}
	}
}

// Unlocked yields the unsignalled fences of usage u or stronger, with their
// usages, without the lock: the range-over-func form of Iter. Everything one walk
// yields comes from one published list; if the list was replaced by the end of the
// walk, it walks the new one from its first fence, so a fence may be yielded twice
// (harmless for waiting; an accumulating caller uses GetFences or Iter, which tell
// it to start over). Models dma_resv_for_each_fence_unlocked().
func (o *Object) Unlocked(u Usage) iter.Seq2[*fence.Fence, Usage] {
	return func(yield func(*fence.Fence, Usage) bool) {
		for {
			l := o.list.Load()
			for i := range int(l.num.Load()) {
				s := l.slots[i].Load()
				if s.usage <= u && !s.f.IsSignaled() && !yield(s.f, s.usage) {
					return
				}
			}
			if o.list.Load() == l {
				return
			}
		}
	}
}

// GetSingleton returns one fence for all the unsignalled fences of usage u or
// stronger: nil for none, the fence for one, an array for several. The result is
// the caller's reference, to Put when done, as in the kernel: the single fence
// gets one more reference, and the array holds one of its own on each fence (it
// drops them when released), as the fences dma_resv_get_fences() hands the
// kernel's array are referenced; the reservation object itself takes none (see
// GetFences).
// Models dma_resv_get_singleton().
func (o *Object) GetSingleton(u Usage) *fence.Fence {
	fs := o.GetFences(u)
	// The caller's reference for a single fence, the array's for several. The
	// object holds none, so a fence whose last reference its owner dropped while
	// it was still in the object is released: it is left out, not brought back
	// (the kernel's object holds a reference, so there it cannot happen).
	kept := fs[:0]
	for _, f := range fs {
		if f.TryGet() {
			kept = append(kept, f)
		}
	}
	switch len(kept) {
	case 0:
		return nil
	case 1:
		return kept[0]
	}
	return &fence.NewArray(kept, fence.AllocContexts(1), 1, false).Fence
}

// CopyFences replaces dst's fences with src's unsignalled ones, usages kept. dst must
// be locked; src is read without its lock. Models dma_resv_copy_fences().
func CopyFences(dst, src *Object) error {
	if err := dst.held(); err != nil {
		return err
	}
	got := src.snapshot(Bookkeep)
	nl := &fenceList{slots: make([]atomic.Pointer[slot], len(got)), max: len(got)}
	for i, sl := range got {
		nl.slots[i].Store(sl) // slots are immutable: sharing them is safe
	}
	nl.num.Store(int32(len(got)))
	dst.list.Store(nl)
	dst.max = len(got)
	return nil
}

// Wait waits for every fence of usage u or stronger, or until ctx ends (ctx.Err()).
// The lock is not needed. Models dma_resv_wait_timeout().
func (o *Object) Wait(ctx context.Context, u Usage) error {
	for f := range o.Unlocked(u) {
		if err := f.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// TestSignaled reports whether every fence of usage u or stronger has signalled.
// Models dma_resv_test_signaled().
func (o *Object) TestSignaled(u Usage) bool {
	for range o.Unlocked(u) {
		return false
	}
	return true
}

// SetDeadline passes the deadline hint to every unsignalled fence of usage u or
// stronger. Models dma_resv_set_deadline().
func (o *Object) SetDeadline(u Usage, t time.Time) {
	for _, f := range o.GetFences(u) {
		f.SetDeadline(t)
	}
}

// Describe lists the fences of usage Read or stronger, one per line, for debugfs.
// The lock must be held: without it lockdep reports, and the list is made all the
// same (see Fences). Models dma_resv_describe().
func (o *Object) Describe() string {
	var b strings.Builder
	for f, u := range o.Fences(Read) {
		fmt.Fprintf(&b, "\t%s fence: %s\n", u, f.Describe())
	}
	return b.String()
}
