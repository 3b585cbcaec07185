package fence

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"time"
)

// A Timeline is a software timeline: a counter, and fences (points) that signal
// when the counter reaches their value. Tests and IGT use it to drive fences by hand.
// Models sw_sync's struct sync_timeline and its ioctls.
//
// Invariants: value only grows; every point at or below signalled has signalled
// (or is born signalled); Inc leaves signalled == value (Close may leave it above:
// a closed timeline's points are born signalled whatever their value). pending
// holds the points not yet signalled, sorted by value, each above signalled
// (wrap-aware, 32-bit, as sw_sync compares); a point stays there until its signal
// has returned, so that Point finds it even while Inc is signalling it.
type Timeline struct {
	ctx *Context

	sigMu     sync.Mutex // held while Inc or Close signal points: one signaller at a time
	mu        sync.Mutex
	value     uint32   // guarded by mu
	signalled uint32   // guarded by mu; written only with sigMu held
	pending   []*Fence // guarded by mu; sorted by seqno
	closed    bool     // guarded by mu; written only with sigMu held
}

// NewTimeline returns a timeline at value 0 with its own fence context, which
// keeps timestamps (WithTimestamps), as sync_file reports them for sw_sync points,
// and has sw_sync's SetDeadline hook (see Deadline); WithOps among opts replaces
// that hook. Models sw_sync_timeline_create (opening /sys/kernel/debug/sync/sw_sync).
func NewTimeline(name string, opts ...ContextOption) *Timeline {
	return &Timeline{ctx: NewContext("sw_sync", name,
		append([]ContextOption{WithTimestamps(), WithOps(timelineOps)}, opts...)...)}
}

// A syncPt is what a Timeline keeps with each of its points, as the fence's Data.
// Models struct sync_pt's deadline.
type syncPt struct {
	mu       sync.Mutex // the kernel's fence->lock, for the deadline only
	deadline time.Time  // guarded by mu
	has      bool       // guarded by mu; the kernel's SW_SYNC_HAS_DEADLINE_BIT
}

// timelineOps are the hooks of every timeline's points. Models timeline_fence_ops.
var timelineOps = &Ops{
	// SetDeadline keeps the earliest deadline it is given. Models
	// timeline_fence_set_deadline().
	SetDeadline: func(f *Fence, t time.Time) {
		pt, ok := f.Data().(*syncPt)
		if !ok {
			return
		}
		pt.mu.Lock()
		defer pt.mu.Unlock()
		if !pt.has || t.Before(pt.deadline) {
			pt.deadline, pt.has = t, true
		}
	},
}

// Deadline returns the earliest deadline set on f (Fence.SetDeadline) while it was
// pending. It returns an error wrapping ErrNoEntry if none was set, and one
// wrapping ErrInvalid if f is not a point of a Timeline. Models
// SW_SYNC_IOC_GET_DEADLINE, which refuses any fence that is not a sw_sync point and
// answers -ENOENT for a point without a deadline.
func (t *Timeline) Deadline(f *Fence) (time.Time, error) {
	var pt *syncPt
	if f != nil {
		pt, _ = f.Data().(*syncPt)
	}
	if pt == nil {
		return time.Time{}, errNotSyncPt
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if !pt.has {
		return time.Time{}, errNoDeadline
	}
	return pt.deadline, nil
}

// Context returns the timeline's fence context. Models sync_timeline.context.
func (t *Timeline) Context() *Context { return t.ctx }

// Value returns the current counter value. Models sync_timeline.value.
func (t *Timeline) Value() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value
}

// Point returns a fence that signals when the counter reaches value. A value already
// reached gives a signalled fence (or, while Inc is still signalling points below
// it, one that Inc signals after them); a pending point with the same value is
// returned again rather than duplicated, also while Inc is signalling it, with a
// reference of its own: every Point result is the caller's reference (to give to
// a container, or Put). Points ahead of the counter are the normal case. On a
// closed timeline the point is returned signalled with ErrNoEntry. Models
// SW_SYNC_IOC_CREATE_FENCE.
func (t *Timeline) Point(value uint32) *Fence {
	t.mu.Lock()
	defer t.mu.Unlock()
	// Compared with signalled, not value: a point that Inc has reached but not yet
	// signalled is still pending, and must be returned, not duplicated by a fence
	// born signalled ahead of it.
	later := seqnoLater(false, uint64(value), uint64(t.signalled))
	i, found := 0, false
	if later {
		i, found = slices.BinarySearchFunc(t.pending, value, func(p *Fence, v uint32) int {
			return cmp.Compare(uint32(p.seqno)-t.signalled, v-t.signalled)
		})
	}
	if found {
		if t.pending[i].tryGet() {
			return t.pending[i] // with a reference of the caller's own, as sync_pt_create() gets one
		}
		// Released (its last reference dropped): a new point, as sync_pt_create()
		// makes one when dma_fence_get_rcu() fails. It goes after the released
		// one, which Inc still signals first: the point Inc may be signalling
		// stays at the head of pending (see drainLocked).
		i++
	}
	f := t.ctx.NewWithData(uint64(value), &syncPt{})
	// Born signalled: a value every point up to which has signalled, or any value on
	// a closed timeline that Close has finished draining. While Close drains, a
	// later value queues behind the point being signalled, as one ahead of an Inc
	// does, so that the context's fences still signal in seqno order.
	if !later || (t.closed && len(t.pending) == 0) {
		if t.closed {
			f.err = ErrNoEntry
		}
		f.flags.Or(flagEnableSignal)
		_ = f.signalLocked(f.ctx.now())
		return f
	}
	t.pending = slices.Insert(t.pending, i, f)
	return f
}

// Inc advances the counter by n and signals, in value order, every point it
// reaches. Their callbacks run in the calling goroutine, after the timeline's lock
// is dropped, so a callback may create points (one the counter has reached is
// signalled by this Inc, in order); it must not Inc or Close the same timeline
// (the kernel would deadlock on its timeline lock). Models SW_SYNC_IOC_INC.
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
	defer t.mu.Unlock()
	t.value += n
	t.drainLocked(nil)
	t.signalled = t.value
}

// drainLocked signals the pending points in order: those the counter has reached,
// or with err (Close) all of them, including those created meanwhile. It holds mu
// on entry and on return but drops it around each signal, so that callbacks may
// create points; sigMu keeps other signallers out. The kernel signals under the
// timeline lock instead, which its callbacks may not take.
func (t *Timeline) drainLocked(err error) {
	for len(t.pending) > 0 {
		f := t.pending[0]
		if err == nil && seqnoLater(false, f.seqno, uint64(t.value)) {
			return
		}
		// Every point below f has signalled: a point made now below it is born
		// signalled (before f, in order); one at f's value is f; one above it is
		// inserted after f and signalled by this loop. So f stays at index 0.
		t.signalled = uint32(f.seqno) - 1
		t.mu.Unlock()
		if err != nil {
			_ = f.SetError(err)
		}
		_ = f.Signal()
		t.mu.Lock()
		t.pending = slices.Delete(t.pending, 0, 1)
		t.signalled = uint32(f.seqno)
	}
}

// Close signals every pending point with ErrNoEntry, as closing the sw_sync file
// does. Points made later are born signalled with that error. Models
// sw_sync_debugfs_release() (the release of the sw_sync file).
func (t *Timeline) Close() {
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.drainLocked(ErrNoEntry)
}
