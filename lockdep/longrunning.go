package lockdep

import "hash/maphash"

var whatSeed = maphash.MakeSeed()

func hashString(s string) uint64 { return maphash.String(whatSeed, s) }

// MightWaitLongRunning annotates a wait on a long-running (LR) fence, one that may
// never complete in bounded time. Waiting on one while holding a memory-management
// lock (KindLRWaitUnderMM) or inside a dma fence signalling section
// (KindLRWaitInSignalling) is reported: eviction and reclaim need those locks and
// fences to make progress, and an LR fence gives no such promise. what names the
// fence in the report.
//
// The kernel has no such check: LR fences were proposed (the 2023 dri-devel RFC
// "dma-fence: Introduce long-running completion fences") with exactly these rules.
func (c *Checker) MightWaitLongRunning(what string) {
	if !c.on.Load() {
		return
	}
	t := c.task()
	var p pending
	for i := range t.held {
		h := &t.held[i]
		var k Kind
		switch {
		case h.class == FenceSignalling && h.mode.isRead():
			k = KindLRWaitInSignalling
		case h.class.IsMM():
			k = KindLRWaitUnderMM
		default:
			continue
		}
		r := c.newReport(k, t.held, t.id)
		hi := h.info()
		r.Other = &hi
		r.Detail = "waiting on long-running fence " + what + " while holding " + paren(h.class.Name()) +
			":\nthat fence may never signal, so memory management could wait forever"
		p.add(r, reportKey{k, uint64(h.class.id), sitePC(r.Stack)})
		break
	}
	c.idle(t)
	c.deliver(p.reps, p.keys)
}

// LongRunningInReservation reports (KindLRFenceInReservation) that a long-running
// fence was offered to a reservation object. The reservation package calls it when
// it refuses such a fence; what names the fence and the object. The kernel has no
// such check (see MightWaitLongRunning).
func (c *Checker) LongRunningInReservation(what string) {
	if !c.on.Load() {
		return
	}
	c.reportObject(KindLRFenceInReservation, what,
		"A long-running fence in a dma_resv would make every eviction and every implicit\n"+
			"synchronisation wait on work that may never finish.")
}

// FenceLeaked reports (KindFenceLeak) that a fence became unreachable while still
// unsignalled with waiters or callbacks pending: they will never run. The fence
// package calls it from a cleanup; what describes the fence. Beyond the kernel,
// after the Rust DMA-fence abstraction's signal-on-drop.
func (c *Checker) FenceLeaked(what string) {
	if !c.on.Load() {
		return
	}
	c.reportObject(KindFenceLeak, what,
		"The fence was dropped without being signalled while waiters or callbacks were\n"+
			"pending; they will never be woken. Signal (with an error) before dropping it.")
}

func (c *Checker) reportObject(k Kind, what, why string) {
	t := c.task()
	var p pending
	r := c.newReport(k, t.held, t.id)
	r.Detail = what + "\n" + why
	p.add(r, reportKey{k, sitePC(r.Stack), hashString(what)})
	c.idle(t)
	c.deliver(p.reps, p.keys)
}
