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
	Release: func(f *Fence) { AsChain(f).release() },
}

// NewChain returns a chain point for payload after prev (nil for the first point)
// with the given seqno. If prev is a chain and seqno is later than it, the point
// joins prev's context (one Context per timeline, shared by its points); otherwise
// it starts a new context and, after a chain, keeps the larger seqno so a timeline
// never goes backwards. The point takes over the caller's references to prev and
// payload, as dma_fence_chain_init() does: its release (the last Put) puts them,
// and a walk that unlinks a signalled point puts it. A caller that goes on using
// prev or payload gets a reference of its own first (pass prev.Get()). Models
// dma_fence_chain_init().
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
			checker: chk, seqno64: true, ops: chainOps, stamps: true} // the kernel stamps every signal
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
// As in dma_fence_chain_walk(), f's reference moves from the point it unlinks to
// that point's predecessor. A walk holds a reference on a point only while it
// unlinks from it (the garbage collector keeps what it merely looks at), so it
// may reach a point that has been released; it does not unlink there, as that
// would drop references the release has already dropped. Models
// dma_fence_chain_walk().
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
		// Unlink only from a point this walk holds a reference on, as the kernel
		// walks from a point it holds: otherwise c could be released between the
		// check and the swap, and its release and this walk would both drop prev.
		held := c.tryGet()
		if !held || (replacement != nil && !replacement.tryGet()) {
			if held {
				c.Put()
			}
			// c, or prev, has been released: step past prev without unlinking it.
			if replacement == nil || AsChain(replacement) == nil {
				if replacement != nil && replacement.IsSignaled() {
					return nil
				}
				return replacement
			}
			c = AsChain(prev)
			continue
		}
		if c.prev.CompareAndSwap(prev, replacement) {
			prev.Put()
		} else if replacement != nil {
			replacement.Put()
		}
		c.Put()
	}
}

// release drops a released point's references: its payload's and its
// predecessor's. A predecessor whose last reference it held is released here too,
// in a loop rather than by recursion, as dma_fence_chain_release() unlinks it, so
// that dropping a long chain does not recurse once per point.
func (c *Chain) release() {
	for {
		if c.payload != nil {
			c.payload.Put()
		}
		prev := c.prev.Load()
		pc := AsChain(prev)
		if pc == nil {
			if prev != nil {
				prev.Put()
			}
			return
		}
		if prev.refs.Add(-1) != -1 {
			return // references are stored minus one: others hold prev
		}
		prev.releasePending() // Put's check; the loop stands for its Release hook
		c = pc
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
// completed (false: signal now). While it waits, c holds a reference to itself and
// one to the payload it waits on. Models dma_fence_chain_enable_signaling().
func (c *Chain) enableSignaling() bool {
	c.Fence.Get()
	if c.arm() {
		return true
	}
	c.Fence.Put() // not the last: the caller of the hook holds one
	return false
}

// arm queues c's callback on the newest payload still pending, with a reference
// to it, and reports false if there is none.
func (c *Chain) arm() bool {
	for f := range c.All() {
		p := Contained(f)
		if !p.tryGet() {
			// Released: the walk reached it through a point released meanwhile
			// (walks hold no reference on the points they return), so it has
			// signalled; taking a reference would bring it back.
			continue
		}
		if p.addCallback(&c.cb, c.payloadSignalled) == nil {
			return true
		}
		p.Put()
	}
	return false
}

// payloadSignalled runs when the payload c waited on signals: c looks again, and
// either waits on the next pending one or signals. It drops the references that
// enableSignaling and arm took, as dma_fence_chain_cb() and its irq_work do.
//
// The kernel's dma_fence_chain_cb() only queues irq_work, and the walk and re-arm
// run there, with no fence lock held. Here the callback runs in the signalling
// goroutine with the signalled payload's lock held, and everything the re-arm
// does can wait for another fence's lock: the walk polls payloads (a poll that
// finds an Array or Chain done signals it), and queueing on the next payload runs
// its EnableSignaling hook (an Array's takes its entries' locks). Done here, any
// of these can deadlock against a goroutine that holds that lock and waits for
// the payload's (an Array enabling its signalling over a fence it shares with the
// chain). So the re-arm always moves to a goroutine of its own, standing for the
// irq_work: the chain signals shortly after its last payload, not inside that
// payload's Signal.
func (c *Chain) payloadSignalled(p *Fence, _ *Callback) {
	p.Put() // signalled: its lock, held here, is not taken
	go c.rearm()
}

// rearm is payloadSignalled's deferred step, with no lock held: wait on the next
// pending payload, or signal. It is part of the payload's signalling path, as the
// kernel's irq_work is (atomic context, where lockdep and might_sleep check it), so
// it runs inside a fence signalling section: a driver hook it reaches (the next
// payload's EnableSignaling, a Signaled poll) that takes a lock held across a
// fence wait is reported.
func (c *Chain) rearm() {
	if chk := c.ctx.Checker(); chk.Enabled() {
		cookie := chk.BeginSignalling()
		defer chk.EndSignalling(cookie)
	}
	if c.arm() {
		return
	}
	_ = c.Fence.Signal()
	c.Fence.Put()
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
