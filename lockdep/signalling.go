package lockdep

// A Cookie is what BeginSignalling returns and EndSignalling takes back. Models the
// bool cookie of dma_fence_begin_signalling(), with enough in it to catch a section
// ended twice, on another goroutine, or out of order. The zero Cookie matches no
// section.
type Cookie struct {
	kind  uint8
	token uint64 // the outermost section's token
	gid   int64
	gen   uint64 // checker generation the section began in
}

const (
	cookieNone   uint8 = iota // zero value: never returned by BeginSignalling
	cookieOff                 // checking was off: EndSignalling does nothing
	cookieOuter               // this call took the fence map
	cookieNested              // the map was already read-held
)

// BeginSignalling opens a fence signalling critical section: everything from the
// moment a fence is visible to others until it is signalled. Inside it, taking a lock
// that someone holds while waiting on a fence, or allocating memory that may reclaim,
// is reported. Sections nest; end each with EndSignalling and the cookie it returned.
//
// Models dma_fence_begin_signalling(): a successful non-recursive read trylock of
// dma_fence_map (lock_acquire with trylock = 1, read = 1), taken only by the
// outermost section; nested ones find it read-held and take nothing, as the
// kernel's lock_is_held_type check does. A trylock, because beginning a section
// never blocks: locks held around it gain no dependency on the map. The kernel
// also returns early in atomic context; goroutines have none.
func (c *Checker) BeginSignalling() Cookie {
	if !c.on.Load() {
		return Cookie{kind: cookieOff}
	}
	t := c.task()
	if i := t.find(&c.fenceMap); i >= 0 && t.held[i].mode.isRead() {
		t.sigNest++
		return Cookie{kind: cookieNested, token: t.held[i].token, gid: t.id, gen: t.gen}
	}
	gid, gen := t.id, t.gen
	c.idle(t)
	tok := c.tokens.Add(1)
	c.acquireToken(&c.fenceMap, c.fenceMap.Class, Shared, flagTry, nil, tok)
	return Cookie{kind: cookieOuter, token: tok, gid: gid, gen: gen}
}

// EndSignalling closes the section BeginSignalling opened. A cookie that matches no
// open section of this goroutine (never begun, already ended, from another
// goroutine, or an outer section ended before the sections nested in it) is
// reported as KindBadSignalling and changes nothing. A section begun before a
// Disable, Enable or Reset was forgotten with the held locks; ending it is not
// reported. Models dma_fence_end_signalling().
func (c *Checker) EndSignalling(ck Cookie) {
	if ck.kind == cookieOff || !c.on.Load() {
		return
	}
	t := c.task()
	i := t.find(&c.fenceMap)
	open := i >= 0 && t.held[i].mode.isRead()
	var why string
	switch {
	case ck.kind == cookieNone:
		why = "EndSignalling with a zero Cookie: no BeginSignalling returned it"
	case ck.gid != t.id:
		why = "EndSignalling on a goroutine other than the one that began the section"
	case ck.gen != t.gen:
		// The section began before a Disable, Enable or Reset, which forgot it: as
		// with a lock taken then (see Enable), ending it is not reported.
		c.idle(t)
		return
	case !open || t.held[i].token != ck.token:
		why = "EndSignalling for a section that is not open (ended twice?)"
	case ck.kind == cookieNested && t.sigNest == 0:
		// Nested cookies of one section are alike; without this an extra end would
		// drive the count negative and let the outer section end while nested.
		why = "EndSignalling for a nested section that is not open (ended twice?)"
	case ck.kind == cookieNested:
		t.sigNest--
		c.idle(t)
		return
	case t.sigNest > 0:
		why = "EndSignalling of an outer section while nested sections are still open"
	default:
		p := c.removeAt(t, i)
		c.idle(t)
		c.deliver(p.reps, p.keys)
		return
	}
	var p pending
	r := c.newReport(KindBadSignalling, t.held, t.id)
	r.Lock = &LockInfo{Class: FenceSignalling.Name(), Mode: Shared}
	r.Detail = why
	p.add(r, reportKey{KindBadSignalling, sitePC(r.Stack), 0})
	c.idle(t)
	c.deliver(p.reps, p.keys)
}

// InSignalling reports whether the calling goroutine is inside a signalling section.
// Models lock_is_held_type(&dma_fence_lockdep_map, 1), the check
// dma_fence_begin_signalling() makes for nesting.
func (c *Checker) InSignalling() bool {
	if !c.on.Load() {
		return false
	}
	t := c.task()
	defer c.idle(t)
	i := t.find(&c.fenceMap)
	return i >= 0 && t.held[i].mode.isRead()
}

// MightWaitFence annotates a wait on a dma fence. It records that every lock held
// here may be held while waiting on a fence, so a signalling path that takes one of
// them is reported (KindSignallingDeadlock).
//
// Models __dma_fence_might_wait(), called by every dma_fence_wait: an exclusive
// acquire and release of dma_fence_map, with the caller's own signalling section
// dropped around it. A wait directly inside a signalling section is therefore not
// reported, as in the kernel, unless strict signalling checks are on.
func (c *Checker) MightWaitFence() {
	if !c.on.Load() {
		return
	}
	t := c.task()
	i := t.find(&c.fenceMap)
	var p pending
	if i >= 0 && t.held[i].mode.isRead() {
		token, gen := t.held[i].token, t.gen
		if c.strict.Load() {
			r := c.newReport(KindFenceWaitInSignalling, t.held, t.id)
			r.Detail = "A dma_fence wait inside a signalling section: the fence being waited on may\n" +
				"depend on the one this section is about to signal."
			p.add(r, reportKey{KindFenceWaitInSignalling, sitePC(r.Stack), 0})
		}
		p2 := c.removeAt(t, i)
		p.reps, p.keys = append(p.reps, p2.reps...), append(p.keys, p2.keys...)
		// Put the section back as it was, innermost, even if a handler panics:
		// the caller's EndSignalling must still find it. Not if a handler switched
		// the checker off or reset it, which forgot the section.
		defer func() {
			if c.on.Load() && c.gen.Load() == gen {
				c.acquireToken(&c.fenceMap, c.fenceMap.Class, Shared, flagTry, nil, token)
			}
		}()
	}
	c.idle(t)
	c.deliver(p.reps, p.keys)
	c.acquire(&c.fenceMap, c.fenceMap.Class, Exclusive, 0, nil)
	c.release(&c.fenceMap, c.fenceMap.Class)
}
