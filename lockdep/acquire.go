package lockdep

import "runtime"

const flagTry uint8 = 1 << 0

// pending collects the reports of one operation; they are delivered after the
// graph lock is dropped and before the operation changes the held stack.
type pending struct {
	reps []*Report
	keys []reportKey
}

func (p *pending) add(r *Report, k reportKey) {
	p.reps = append(p.reps, r)
	p.keys = append(p.keys, k)
}

// acquire is the body of every acquisition annotation. Models __lock_acquire():
// compute the chain key, and only if the chain is new, take the graph lock to
// check recursion and add the dependencies on the held locks.
//
//go:noinline
func (c *Checker) acquire(m *Map, cls *Class, mode Mode, flags uint8, nest *Map) {
	c.acquireToken(m, cls, mode, flags, nest, 0)
}

func (c *Checker) acquireToken(m *Map, cls *Class, mode Mode, flags uint8, nest *Map, token uint64) {
	if cls == nil {
		c.badClass(m)
		return
	}
	t := c.task()
	h := held{m: m, class: cls, mode: mode, try: flags&flagTry != 0, nest: nest, token: token}
	captureSite(&h.site)
	var p pending
	c.validate(t.held, &h, t.id, &p)
	if len(p.reps) > 0 {
		gen := t.gen
		c.idle(t)
		c.deliver(p.reps, p.keys)
		// The handler may have panicked (nothing recorded), or switched the
		// checker off or reset it (nothing to record into).
		if !c.on.Load() || c.gen.Load() != gen {
			return
		}
		t = c.task()
	}
	m.gen.Store(t.gen + 1) // see Map.gen: 0 is kept for never taken
	t.held = append(t.held, h)
}

// validate sets h.key and checks h against the held stack below it. Models
// validate_chain(): a trylock is never checked; a chain already in the cache was
// checked before.
func (c *Checker) validate(stack []held, h *held, gid int64, p *pending) {
	var prev uint64
	var top *held
	if n := len(stack); n > 0 {
		top = &stack[n-1]
		prev = top.key
	}
	if h.nest != nil {
		if !holds(stack, h.nest) {
			c.reportNestNotHeld(stack, h, gid, p)
			h.nest = nil
		} else if top != nil && top.class == h.class {
			// The kernel merges this into the entry below (held_lock.references):
			// the nest lock already orders it, so there is nothing new to learn.
			h.key, h.merged = prev, true
			return
		}
	}
	h.key = chainKey(prev, h.class, h.mode, h.try)
	if h.try || c.chains.Load().contains(h.key) {
		return
	}
	c.validateSlow(stack, h, gid, p)
}

func holds(stack []held, m *Map) bool {
	for i := range stack {
		if stack[i].m == m {
			return true
		}
	}
	return false
}

// validateSlow runs under the graph lock. Models check_deadlock() followed by
// check_prevs_add(), then adding the chain to the cache.
func (c *Checker) validateSlow(stack []held, h *held, gid int64, p *pending) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tbl := c.chains.Load()
	if tbl.contains(h.key) {
		return
	}
	// Cache the chain only if it was clean: a reported chain must be checked
	// again next time, so that ReportAll sees every occurrence (the default
	// handler still gets it once, through the reported set).
	nreps := len(p.reps)
	defer func() {
		if len(p.reps) == nreps {
			c.chains.Store(tbl.insert(h.key))
		}
	}()

	// check_deadlock: the same class already held.
	nested := false
	for i := range stack {
		q := &stack[i]
		if h.nest != nil && q.m == h.nest {
			nested = true
		}
		if q.class != h.class {
			continue
		}
		if h.mode == RecursiveRead && q.mode.isRead() {
			continue
		}
		if nested {
			return // the nest lock serialises this class: no dependencies to add
		}
		c.reportRecursive(stack, h, q, gid, p)
		return
	}

	// check_prevs_add: a dependency from each held lock, innermost first,
	// stopping after the first that was not a trylock (the ones below it already
	// lead here through it).
	var stk []uintptr
	for i := len(stack) - 1; i >= 0; i-- {
		q := &stack[i]
		if q.class != h.class {
			if !c.addDependency(stack, q, h, gid, &stk, p) {
				return
			}
		}
		if !q.try {
			break
		}
	}
}

// addDependency adds q -> h unless it closes a strong cycle, which it reports
// instead. It returns false after a report. Models check_prev_add().
func (c *Checker) addDependency(stack []held, q, h *held, gid int64, stk *[]uintptr, p *pending) bool {
	from := c.node(q.class)
	dep := depType(q.mode, h.mode)
	e := from.edge(h.class.id)
	if e != nil && e.dep&dep != 0 {
		return true
	}
	if path := c.strongPath(h.class, h.mode, q.class, q.mode); path != nil {
		c.reportCycle(stack, q, h, path, gid, p)
		return false
	}
	if e != nil {
		e.dep |= dep
		return true
	}
	if *stk == nil {
		*stk = captureStack(3)
	}
	c.node(h.class)
	from.addEdge(edge{to: h.class.id, dep: dep, gid: gid, stack: *stk})
	c.nedges++
	return true
}

// release is the body of Map.Release. Models __lock_release(): find the entry,
// remove it, and if it was not the innermost, re-validate the ones above it, whose
// chains changed.
func (c *Checker) release(m *Map, cls *Class) {
	if cls == nil {
		return
	}
	t := c.task()
	if n := len(t.held); n > 0 && t.held[n-1].m == m {
		// The common case, innermost first: nothing above to revalidate.
		t.held[n-1] = held{}
		t.held = t.held[:n-1]
		c.idle(t)
		return
	}
	i := t.find(m)
	if i < 0 {
		gen := t.gen
		c.idle(t)
		// Report unless the last acquisition was in an older generation, which
		// forgot it, or the checker never saw one and may have missed it while
		// off (see Map.gen and Enable).
		if g := m.gen.Load(); (g == 0 && !c.everOff.Load()) || g == gen+1 {
			var p pending
			c.reportBadUnlock(t, cls, &p)
			c.deliver(p.reps, p.keys)
		}
		return
	}
	p := c.removeAt(t, i)
	c.idle(t)
	c.deliver(p.reps, p.keys)
}

// removeAt removes entry i from t's stack and revalidates the entries above it, as
// the kernel's reacquire of the held locks above a released one does.
func (c *Checker) removeAt(t *task, i int) pending {
	var p pending
	n := len(t.held)
	if i == n-1 {
		t.held[i] = held{}
		t.held = t.held[:i]
		return p
	}
	above := append([]held(nil), t.held[i+1:]...)
	clear(t.held[i:])
	t.held = t.held[:i]
	for _, h := range above {
		h.merged = false
		c.validate(t.held, &h, t.id, &p)
		t.held = append(t.held, h)
	}
	return p
}

func (c *Checker) assertHeld(m *Map, cls *Class, want bool) {
	if cls == nil {
		c.badClass(m)
		return
	}
	t := c.task()
	got := t.find(m) >= 0
	if got == want {
		c.idle(t)
		return
	}
	var p pending
	r := c.newReport(KindAssert, t.held, t.id)
	r.Lock = &LockInfo{Class: cls.Name()}
	if want {
		r.Detail = "lockdep_assert_held: the lock is not held by this goroutine"
	} else {
		r.Detail = "lockdep_assert_not_held: the lock is held by this goroutine"
	}
	p.add(r, reportKey{KindAssert, uint64(cls.id), sitePC(r.Stack)})
	c.idle(t)
	c.deliver(p.reps, p.keys)
}

// newReport fills the parts every report has: kind, goroutine, held locks, stack.
func (c *Checker) newReport(k Kind, stack []held, gid int64) *Report {
	return &Report{
		Kind:      k,
		Goroutine: gid,
		Held:      heldInfo(stack),
		Stack:     trimInternal(frames(captureStack(2))),
	}
}

func heldInfo(stack []held) []LockInfo {
	if len(stack) == 0 {
		return nil
	}
	out := make([]LockInfo, len(stack))
	for i := range stack {
		out[i] = stack[i].info()
	}
	return out
}

func (h *held) info() LockInfo {
	// Copy the site: slicing h.site itself would make every held entry escape to
	// the heap, since runtime.CallersFrames keeps the slice (one allocation per
	// checked acquisition, for the sake of a report that rarely comes).
	site := h.site
	return LockInfo{Class: h.class.Name(), Mode: h.mode, Try: h.try, Site: userFrame(site[:])}
}

// sitePC keys a report by where it happened, for reports not about a class pair.
func sitePC(fs []runtime.Frame) uint64 {
	if len(fs) == 0 {
		return 0
	}
	return uint64(fs[0].PC)
}

func (c *Checker) reportRecursive(stack []held, h, q *held, gid int64, p *pending) {
	r := c.newReport(KindRecursive, stack, gid)
	li, qi := h.info(), q.info()
	r.Lock, r.Other = &li, &qi
	p.add(r, reportKey{KindRecursive, uint64(h.class.id), uint64(h.mode)})
}

func (c *Checker) reportNestNotHeld(stack []held, h *held, gid int64, p *pending) {
	r := c.newReport(KindNestNotHeld, stack, gid)
	li := h.info()
	r.Lock = &li
	r.Detail = "the nest lock " + paren(h.nest.Class.Name()) + " named for this acquisition is not held"
	p.add(r, reportKey{KindNestNotHeld, uint64(h.class.id), uint64(h.nest.Class.id)})
}

func (c *Checker) reportBadUnlock(t *task, cls *Class, p *pending) {
	r := c.newReport(KindBadUnlock, t.held, t.id)
	r.Lock = &LockInfo{Class: cls.Name()}
	if len(r.Stack) > 0 {
		r.Lock.Site = r.Stack[0]
	}
	p.add(r, reportKey{KindBadUnlock, uint64(cls.id), sitePC(r.Stack)})
}

// reportCycle reports the new dependency q -> h that closes a cycle with path
// (h -> ... -> q), and names the GPU rule the cycle breaks when it runs through
// dma_fence_map. Runs under the graph lock.
func (c *Checker) reportCycle(stack []held, q, h *held, path []*edge, gid int64, p *pending) {
	kind := KindCircular
	through := q.class == FenceSignalling || h.class == FenceSignalling
	allocInSection := q.class == FenceSignalling && h.class == FSReclaim
	from := h.class // the existing chain runs h -> ... -> q
	chain := make([]Link, len(path))
	for i, e := range path {
		to := c.nodes[e.to].class
		chain[i] = Link{From: from.Name(), To: to.Name(), Goroutine: e.gid, Stack: trimInternal(frames(e.stack))}
		through = through || to == FenceSignalling
		allocInSection = allocInSection || (from == FenceSignalling && to == FSReclaim)
		from = to
	}
	switch {
	case allocInSection:
		kind = KindReclaimInSignalling
	case through:
		kind = KindSignallingDeadlock
	}
	r := c.newReport(kind, stack, gid)
	li, qi := h.info(), q.info()
	r.Lock, r.Other = &li, &qi
	r.New = &Link{From: q.class.Name(), To: h.class.Name(), Goroutine: gid, Stack: r.Stack}
	r.Chain = chain
	switch kind {
	case KindSignallingDeadlock:
		r.Detail = "A dma_fence signalling path takes a lock that is held elsewhere while waiting\n" +
			"on a dma_fence: the waiter can block the signaller, which then never signals."
	case KindReclaimInSignalling:
		r.Detail = "A dma_fence signalling path allocates memory in a way that may enter reclaim,\n" +
			"and reclaim (shrinkers, MMU notifiers) may wait on dma_fences: use a non-reclaiming\n" +
			"allocation, or allocate before the fence is published."
	}
	p.add(r, reportKey{kind, uint64(q.class.id), uint64(h.class.id)})
}

func (c *Checker) badClass(m *Map) {
	var p pending
	r := &Report{Kind: KindBadClass, Stack: trimInternal(frames(captureStack(1)))}
	r.Detail = "a lockdep.Map (or Mutex, RWMutex) was used with a nil Class; it is not checked"
	p.add(r, reportKey{KindBadClass, uint64(uintptrOf(m)), 0})
	c.deliver(p.reps, p.keys)
}
