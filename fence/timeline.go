package fence

import (
	"cmp"
	"math"
	"slices"
	"sync"
)

// A Timeline is a software timeline: a counter, and fences (points) that signal
// when the counter reaches their value. Tests and IGT use it to drive fences by hand.
// Models sw_sync's struct sync_timeline and its ioctls.
//
// Invariants: value only grows; pending holds the unsignalled points, sorted by
// value, each above the current value (wrap-aware, 32-bit, as sw_sync compares).
type Timeline struct {
	ctx *Context

	sigMu   sync.Mutex // held while Inc or Close signal points: one signaller at a time
	mu      sync.Mutex
	value   uint32   // guarded by mu
	pending []*Fence // guarded by mu; sorted by seqno
	closed  bool     // guarded by mu
}

// NewTimeline returns a timeline at value 0 with its own fence context, which
// keeps timestamps (WithTimestamps), as sync_file reports them for sw_sync points.
// Models sw_sync_timeline_create (opening /sys/kernel/debug/sync/sw_sync).
func NewTimeline(name string, opts ...ContextOption) *Timeline {
	return &Timeline{ctx: NewContext("sw_sync", name, append([]ContextOption{WithTimestamps()}, opts...)...)}
}

// Context returns the timeline's fence context.
func (t *Timeline) Context() *Context { return t.ctx }

// Value returns the current counter value.
func (t *Timeline) Value() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value
}

// Point returns a fence that signals when the counter reaches value. A value already
// reached gives a signalled fence; a pending point with the same value is returned
// again rather than duplicated. Points ahead of the counter are the normal case. On a
// closed timeline the point is returned signalled with ErrNoEntry. Models
// SW_SYNC_IOC_CREATE_FENCE.
func (t *Timeline) Point(value uint32) *Fence {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.ctx.New(uint64(value))
	if t.closed {
		f.err = ErrNoEntry
		f.flags.Or(flagEnableSignal)
		_ = f.signalLocked(f.ctx.now())
		return f
	}
	if !seqnoLater(false, uint64(value), uint64(t.value)) {
		f.flags.Or(flagEnableSignal)
		_ = f.signalLocked(f.ctx.now())
		return f
	}
	i, found := slices.BinarySearchFunc(t.pending, value, func(p *Fence, v uint32) int {
		return cmp.Compare(int32(uint32(p.seqno)-t.value), int32(v-t.value))
	})
	if found {
		return t.pending[i]
	}
	t.pending = slices.Insert(t.pending, i, f)
	return f
}

// Inc advances the counter by n and signals, in value order, every point it
// reaches. Their callbacks run in the calling goroutine, after the timeline's lock
// is dropped, so a callback may create points; it must not Inc or Close the same
// timeline (the kernel would deadlock on its timeline lock). Models SW_SYNC_IOC_INC.
func (t *Timeline) Inc(n uint32) {
	// Points signal in value order even when two goroutines Inc at once: the
	// kernel signals under the timeline lock; here sigMu orders the signalling
	// while mu is free, so that callbacks may create points.
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	// sw_sync_ioctl_inc() applies n above INT_MAX as INT_MAX steps: in one larger
	// step a pending point would compare (wrap-aware) as still ahead of the new
	// value and be skipped.
	for n > math.MaxInt32 {
		t.inc(math.MaxInt32)
		n -= math.MaxInt32
	}
	t.inc(n)
}

// inc is one step of Inc, n <= INT_MAX. Models sync_timeline_signal().
func (t *Timeline) inc(n uint32) {
	t.mu.Lock()
	t.value += n
	i := 0
	for i < len(t.pending) && !seqnoLater(false, t.pending[i].seqno, uint64(t.value)) {
		i++
	}
	due := slices.Clone(t.pending[:i])
	t.pending = slices.Delete(t.pending, 0, i)
	t.mu.Unlock()
	for _, f := range due {
		_ = f.Signal()
	}
}

// Close signals every pending point with ErrNoEntry, as closing the sw_sync file
// does. Points made later are born signalled with that error.
func (t *Timeline) Close() {
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	t.mu.Lock()
	t.closed = true
	due := t.pending
	t.pending = nil
	t.mu.Unlock()
	for _, f := range due {
		_ = f.SetError(ErrNoEntry)
		_ = f.Signal()
	}
}
