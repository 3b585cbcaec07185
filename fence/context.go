package fence

import (
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/lockdep"
)

// contextCounter hands out fence contexts. It starts at 1: context 0 belongs to the
// stub fences.
var contextCounter atomic.Uint64

func init() { contextCounter.Store(1) }

// AllocContexts reserves n consecutive fence context ids and returns the first.
// Models dma_fence_context_alloc(). n == 0 is allowed (the kernel warns) and
// reserves nothing.
func AllocContexts(n uint64) uint64 { return contextCounter.Add(n) - n }

// Ops are a driver's optional hooks, called by the fence core. Models struct
// dma_fence_ops; every hook may be nil.
type Ops struct {
	// EnableSignaling is called once, the first time someone needs the fence to
	// signal on its own (a callback, a wait, EnableSignaling), with the fence's lock
	// held. Returning false means the fence has already completed: it is signalled
	// at once (if the work failed, record that first with f.SetErrorLocked, as
	// SetError would take the lock the hook already runs under). Models
	// dma_fence_ops.enable_signaling.
	EnableSignaling func(f *Fence) bool
	// Signaled polls the hardware: true means the fence has completed, and
	// IsSignaled then signals it. Models dma_fence_ops.signaled.
	Signaled func(f *Fence) bool
	// SetDeadline passes on a hint that the fence is wanted by t. Models
	// dma_fence_ops.set_deadline.
	SetDeadline func(f *Fence, t time.Time)
	// Release runs when the last reference (see Put) is dropped. Models
	// dma_fence_ops.release.
	Release func(f *Fence)
}

// A Context is a fence timeline: fences on one context signal in seqno order, so a
// later seqno implies the earlier ones. Models a dma_fence context (an id from
// dma_fence_context_alloc) together with what the kernel repeats in every fence of
// it: the driver and timeline names, the ops, and the seqno comparison mode.
//
// Not to be confused with context.Context, which this package's waits also take.
type Context struct {
	id       uint64
	driver   string
	timeline string
	ops      *Ops
	checker  *lockdep.Checker
	seqno64  bool
	lr       bool
	leaks    bool
	stamps   bool
	idSet    bool
	next     atomic.Uint64 // last seqno handed out by Next
}

// A ContextOption configures NewContext. Models the per-fence arguments of
// dma_fence_init() (ops) and what the kernel fixes at build time (lockdep,
// debug checks), set once per context here.
type ContextOption func(*Context)

// WithOps sets the driver hooks of every fence of the context. Models the ops
// argument of dma_fence_init().
func WithOps(ops *Ops) ContextOption { return func(c *Context) { c.ops = ops } }

// WithChecker sends the context's lockdep annotations (waits, signalling sections,
// leaks) to c instead of lockdep.Default. It has no kernel counterpart: the
// kernel has one lockdep.
func WithChecker(c *lockdep.Checker) ContextOption {
	return func(x *Context) { x.checker = c }
}

// Seqno64 compares seqnos as plain 64-bit numbers. Without it they compare as the
// kernel's dma_fence_init fences do: wrap-aware, on the low 32 bits. Models
// dma_fence_init64().
func Seqno64() ContextOption { return func(c *Context) { c.seqno64 = true } }

// LongRunning makes every fence of the context a long-running (LR) fence: one
// that may take unbounded time. LR fences can be waited on (lockdep checks the
// wait), take callbacks only through AddCallbackUnbounded, and are refused by
// reservation objects. The kernel has no such kind; see lockdep's package comment.
func LongRunning() ContextOption { return func(c *Context) { c.lr = true } }

// LeakCheck makes the garbage collector report, through lockdep (KindFenceLeak), a
// fence of this context that becomes unreachable while unsignalled with waiters or
// callbacks pending: they would never run. Models the Rust DMA-fence abstraction's
// signal-on-drop; C has no counterpart. Off by default; off, it costs nothing.
func LeakCheck() ContextOption { return func(c *Context) { c.leaks = true } }

// WithTimestamps makes Signal record the time each fence of the context signals,
// for Timestamp. The kernel reads the clock in every dma_fence_signal(); here it is
// opt-in, because reading the monotonic clock costs more than all the rest of
// creating and signalling a fence together, and few readers look at the result:
// GPU-time accounting (package sched passes its own clock readings to
// SignalTimestamp) and sync_file's fence info. Without it, Timestamp reports a
// time only for fences signalled with SignalTimestamp. Models the timestamp
// dma_fence_signal() records.
func WithTimestamps() ContextOption { return func(c *Context) { c.stamps = true } }

// WithID gives the context an id the caller reserved with AllocContexts, instead
// of allocating one; a scheduler entity reserves two ids and uses ctx for its
// scheduled fences and ctx+1 for its finished fences. Models passing a context
// from dma_fence_context_alloc() to dma_fence_init().
func WithID(id uint64) ContextOption { return func(c *Context) { c.id, c.idSet = id, true } }

// NewContext allocates a fence context with the given driver and timeline names.
// Models dma_fence_context_alloc(1), with the names that a driver's
// get_driver_name and get_timeline_name ops return.
func NewContext(driver, timeline string, opts ...ContextOption) *Context {
	c := &Context{driver: driver, timeline: timeline}
	for _, o := range opts {
		o(c)
	}
	if !c.idSet {
		c.id = AllocContexts(1)
	}
	return c
}

// ID returns the context id. Models dma_fence.context.
func (c *Context) ID() uint64 { return c.id }

// Driver returns the driver name. Models ops->get_driver_name().
func (c *Context) Driver() string { return c.driver }

// Timeline returns the timeline name. Models ops->get_timeline_name().
func (c *Context) Timeline() string { return c.timeline }

// Checker returns the lockdep checker the context reports to. It has no kernel
// counterpart: the kernel has one lockdep.
func (c *Context) Checker() *lockdep.Checker {
	if c.checker != nil {
		return c.checker
	}
	return lockdep.Default
}

// New returns an unsignalled fence on c with the given seqno. Models
// dma_fence_init() on a fresh allocation.
func (c *Context) New(seqno uint64) *Fence {
	f := &Fence{ctx: c, seqno: seqno}
	c.initFlags(f)
	return f
}

// initFlags sets what f's flags say about its context, before f is published.
func (c *Context) initFlags(f *Fence) {
	if c.ops != nil && c.ops.Signaled != nil {
		f.flags.Or(flagPoll)
	}
	if c.leaks {
		f.watchLeaks()
	}
}

// Init makes f, which must be the zero Fence, an unsignalled fence on c with the
// given seqno: for a fence embedded in a larger object, as drivers embed struct
// dma_fence in their own and the scheduler embeds two in each job, so that one
// allocation serves all of them. Initialising a fence that is already in use
// returns an error wrapping ErrInvalid and changes nothing. Models dma_fence_init().
func (c *Context) Init(f *Fence, seqno uint64) error {
	if f == nil || f.ctx != nil {
		return errReinit
	}
	f.ctx, f.seqno = c, seqno
	c.initFlags(f)
	return nil
}

// NewWithData is New with a value for the driver, read back with Fence.Data: the
// Go stand-in for embedding struct dma_fence in a driver's own fence and finding it
// again with container_of. Models dma_fence_init() on a driver's own fence.
func (c *Context) NewWithData(seqno uint64, data any) *Fence {
	f := c.New(seqno)
	if st := f.leaks(); st != nil {
		st.data = data
	} else {
		f.data = data
	}
	return f
}

// Next returns an unsignalled fence on c with the seqno after the last one Next
// returned (1 for the first). Models dma_fence_init() with a driver's next ring
// seqno.
func (c *Context) Next() *Fence { return c.New(c.next.Add(1)) }
