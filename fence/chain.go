package fence

import (
	"iter"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gpusync/gpusync/lockdep"
)

// A Chain is one point on a timeline of fences (a timeline syncobj): it carries a
// payload fence and links to the previous point, and signals once its payload and
// every older payload have signalled. Signalled links are unlinked as walks pass
// them (garbage collection), so a long-lived timeline stays short. Models struct
// dma_fence_chain.
//
// The chain's own error stays nil: like the kernel, it does not propagate payload
// errors (inspect the payloads with Unwrap).
type Chain struct {
	Fence // must be first: AsChain converts a *Fence back

	prev      atomic.Pointer[Fence]
	prevSeqno uint64
	payload   *Fence
	cb        Callback
}

// chainOps is shared by every chain point: the hooks find theirs with AsChain.
var chainOps = &Ops{
	EnableSignaling: func(f *Fence) bool { return AsChain(f).enableSignaling() },
	Signaled:        func(f *Fence) bool { return AsChain(f).signaledPoll() },
	SetDeadline: func(f *Fence, t time.Time) {
		for p := range AsChain(f).All() {
			Contained(p).SetDeadline(t)
		}
	},
}

// NewChain returns a chain point for payload after prev (nil for the first point)
// with the given seqno. If prev is a chain and seqno is later than it, the point
// joins prev's context (one Context per timeline, shared by its points); otherwise
// it starts a new context and, after a chain, keeps the larger seqno so a timeline
// never goes backwards. Models dma_fence_chain_init().
func NewChain(prev, payload *Fence, seqno uint64) *Chain {
	c := &Chain{payload: payload}
	c.prev.Store(prev)
	var fc *Context
	if pc := AsChain(prev); pc != nil && seqnoLater(true, seqno, pc.seqno) {
		fc = pc.ctx
		c.prevSeqno = pc.seqno
	} else {
		if pc != nil && pc.seqno > seqno {
			seqno = pc.seqno
		}
		var chk *lockdep.Checker
		if payload != nil {
			chk = payload.ctx.checker
		}
		fc = &Context{id: AllocContexts(1), driver: "dma_fence_chain", timeline: "unbound",
			checker: chk, seqno64: true, ops: chainOps}
	}
	c.Fence.ctx, c.Fence.seqno = fc, seqno
	c.Fence.flags.Store(flagChain | flagPoll)
	return c
}

// AsChain returns the Chain f is, or nil. Models to_dma_fence_chain().
func AsChain(f *Fence) *Chain {
	if f == nil || f.flags.Load()&flagChain == 0 {
		return nil
	}
	return (*Chain)(unsafe.Pointer(f))
}

// Payload returns the fence the point carries. Models dma_fence_chain_contained()
// for a chain.
func (c *Chain) Payload() *Fence { return c.payload }

// Contained returns f's payload if f is a chain, else f. Models
// dma_fence_chain_contained().
func Contained(f *Fence) *Fence {
	if c := AsChain(f); c != nil {
		return c.payload
	}
	return f
}

// Prev returns the previous point, or nil once everything older has signalled and
// been unlinked. Models dma_fence_chain_get_prev().
func (c *Chain) Prev() *Fence { return c.prev.Load() }

// walk returns the first unsignalled point older than f, unlinking signalled
// points on the way, or nil if everything older has signalled. f must be a chain.
// Models dma_fence_chain_walk().
func walk(f *Fence) *Fence {
	c := AsChain(f)
	if c == nil {
		return nil
	}
	for {
		prev := c.prev.Load()
		if prev == nil {
			return nil
		}
		var replacement *Fence
		if pc := AsChain(prev); pc != nil {
			if !pc.payload.IsSignaled() {
				return prev
			}
			replacement = pc.prev.Load()
		} else if !prev.IsSignaled() {
			return prev
		}
		c.prev.CompareAndSwap(prev, replacement)
	}
}

// All yields the chain from c backwards: c itself, then every older point whose
// payload has not signalled, unlinking the signalled ones. A plain (non-chain) fence
// at the end is yielded too. Models dma_fence_chain_for_each().
func (c *Chain) All() iter.Seq[*Fence] {
	return func(yield func(*Fence) bool) {
		for f := &c.Fence; f != nil; f = walk(f) {
			if !yield(f) {
				return
			}
		}
	}
}

// FindSeqno finds the point for seqno on the chain ending at c. It returns c for
// seqno 0; ErrNotYetAdded if seqno is beyond c (the point does not exist yet);
// otherwise the oldest point still pending that covers seqno, or nil if seqno has
// already signalled. Models dma_fence_chain_find_seqno().
func (c *Chain) FindSeqno(seqno uint64) (*Fence, error) {
	if seqno == 0 {
		return &c.Fence, nil
	}
	if c.seqno < seqno {
		return nil, ErrNotYetAdded
	}
	for f := range c.All() {
		fc := AsChain(f)
		if fc == nil || fc.ctx.id != c.ctx.id || fc.prevSeqno < seqno {
			return f, nil
		}
	}
	return nil, nil
}

// enableSignaling runs with c.Fence's lock held. It queues c's one callback on the
// newest payload still pending, walking from c (its own payload first); if none is pending, c has
// completed (false: signal now). Models dma_fence_chain_enable_signaling().
func (c *Chain) enableSignaling() bool {
	for f := range c.All() {
		if Contained(f).addCallback(&c.cb, c.payloadSignalled) == nil {
			return true
		}
	}
	return false
}

// payloadSignalled runs when the payload c waited on signals: c looks again, and
// either waits on the next pending one or signals. The kernel defers this to
// irq_work; here it runs in the signalling goroutine, without c's lock, and only c's
// own callback can be queued, so there is no lock to invert.
func (c *Chain) payloadSignalled(*Fence, *Callback) {
	for f := range c.All() {
		if Contained(f).addCallback(&c.cb, c.payloadSignalled) == nil {
			return
		}
	}
	_ = c.Fence.Signal()
}

// signaledPoll is the chain's Signaled hook: true when every payload the walk
// reaches has signalled.
func (c *Chain) signaledPoll() bool {
	for f := range c.All() {
		if !Contained(f).IsSignaled() {
			return false
		}
	}
	return true
}
