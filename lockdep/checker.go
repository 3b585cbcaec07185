package lockdep

import (
	"os"
	"sync"
	"sync/atomic"
)

// A Checker is one lockdep instance: a dependency graph of lock classes, the
// chain cache, every goroutine's held locks, and a handler for reports. Annotations
// reach it through a Map's Checker field, or Default when that is nil.
//
// The kernel has one lockdep; Default plays that part. A test that wants its own
// graph and handler makes a Checker with NewChecker (or lockdeptest.New) and hands
// it to the objects under test.
//
// Models the state of the kernel's lockdep: the class dependency graph, the
// lock_chains cache, every task's held_locks, and where splats go.
//
// A Checker must not be copied. All its methods are safe for concurrent use.
type Checker struct {
	on        atomic.Bool   // written under onMu once the checker is shared, read without it
	gen       atomic.Uint64 // bumped by Reset and by a real Enable or Disable: held stacks of older generations are stale
	onMu      sync.Mutex    // serialises Enable and Disable, so that on and gen change together
	everOff   atomic.Bool   // checking has been off at some time: locks may have been taken unseen
	handler   atomic.Pointer[Handler]
	strict    atomic.Bool
	reportAll atomic.Bool
	tokens    atomic.Uint64 // BeginSignalling tokens

	tasks   atomic.Pointer[taskTable] // goroutine id -> *task; replaced under tasksMu
	tasksMu sync.Mutex
	sweepAt int // guarded by tasksMu: table size that triggers a sweep

	chains atomic.Pointer[chainTable] // written under mu, read without it

	mu       sync.Mutex         // the graph lock
	nodes    []*node            // guarded by mu; indexed by class id
	nedges   int                // guarded by mu
	reported map[reportKey]bool // guarded by mu
	bfsSeen  []uint64           // guarded by mu: visit marks of strongPath, by generation
	bfsGen   uint64             // guarded by mu
	bfsQueue []bfsVisit         // guarded by mu: strongPath's reusable queue

	// The pseudo-locks of this checker: the kernel's global lockdep_maps.
	fenceMap, reclaimMap, mmuMap Map
}

type reportKey struct {
	kind Kind
	a, b uint64
}

// An Option configures a Checker made by NewChecker. The kernel has no counterpart:
// its lockdep is configured when it is built (CONFIG_PROVE_LOCKING and friends).
type Option func(*Checker)

// WithHandler sets the handler reports go to. The default logs to standard error.
// The kernel has no counterpart: it always prints to the console.
func WithHandler(h Handler) Option { return func(c *Checker) { c.SetHandler(h) } }

// StrictSignalling makes a dma fence wait inside a signalling section a report
// (KindFenceWaitInSignalling). The kernel drops the section's read hold around the
// wait annotation and so does not report it; off by default to match. The kernel
// has no such option.
func StrictSignalling() Option { return func(c *Checker) { c.strict.Store(true) } }

// ReportAll delivers every occurrence of a problem instead of the first only. The
// kernel has no counterpart: it reports its first problem and turns itself off.
func ReportAll() Option { return func(c *Checker) { c.reportAll.Store(true) } }

// Off makes the checker start disabled (see Enable). The kernel has no
// counterpart: its debug_locks starts on.
func Off() Option {
	return func(c *Checker) {
		c.on.Store(false)
		c.everOff.Store(true)
	}
}

// Default is the checker that annotations without an explicit Checker go to. It is
// enabled and logs reports to standard error, as the kernel's lockdep prints to the
// console; it is not primed (see Prime). Models the kernel's one, global lockdep.
var Default = NewChecker()

// NewChecker returns an enabled checker with an empty graph, configured by opts.
// The kernel has no counterpart: it has one lockdep, set up at boot.
func NewChecker(opts ...Option) *Checker {
	c := &Checker{reported: make(map[reportKey]bool)}
	c.fenceMap = Map{Class: FenceSignalling, Checker: c}
	c.reclaimMap = Map{Class: FSReclaim, Checker: c}
	c.mmuMap = Map{Class: MMUNotifier, Checker: c}
	c.chains.Store(newChainTable(256))
	c.tasks.Store(newTaskTable(64))
	c.sweepAt = sweepFloor
	c.SetHandler(Log(os.Stderr))
	c.on.Store(true)
	for _, o := range opts {
		o(c)
	}
	return c
}

// SetHandler replaces the handler. A nil handler drops reports. The kernel has no
// counterpart: it always prints to the console.
func (c *Checker) SetHandler(h Handler) {
	if h == nil {
		h = func(*Report) {}
	}
	c.handler.Store(&h)
}

// SetStrictSignalling turns the strict fence-wait check on or off (see
// StrictSignalling). The kernel has no such option.
func (c *Checker) SetStrictSignalling(on bool) { c.strict.Store(on) }

// SetReportAll chooses between reporting each distinct problem once (false, the
// default) and every time it happens. The kernel has no counterpart (see
// ReportAll).
func (c *Checker) SetReportAll(on bool) { c.reportAll.Store(on) }

// Enable turns checking on. Locks taken while checking was off are unknown to
// the checker; releasing them later is not reported. A lock that was only ever
// taken while checking was off cannot be told from one never taken (marking
// locks while off would cost the disabled path more than its one load), so once
// a checker has been off, the release of a lock it never saw taken is not
// reported either; a checker that was always on reports it (KindBadUnlock).
// Enabling a checker that is already on changes nothing: what each goroutine
// holds is kept. The kernel has no counterpart: once debug_locks is off it stays
// off.
func (c *Checker) Enable() {
	c.onMu.Lock()
	defer c.onMu.Unlock()
	if c.on.Load() {
		// A new generation would forget every held lock while they are still
		// held: a later inversion against them would go unseen.
		return
	}
	// Bump before switching on, so that an annotation that sees checking on also
	// sees the new generation and drops a stack left from before the Disable.
	c.gen.Add(1)
	c.on.Store(true)
}

// Disable turns checking off. While off, an annotation costs one atomic load.
// Disabling a checker that is already off changes nothing. Models
// debug_locks_off(), but reversible.
func (c *Checker) Disable() {
	c.onMu.Lock()
	defer c.onMu.Unlock()
	if !c.on.Load() {
		return
	}
	c.on.Store(false)
	c.everOff.Store(true)
	// Annotations already past their check of on may still record into the old
	// generation; the bump makes whatever they leave stale.
	c.gen.Add(1)
}

// Enabled reports whether checking is on. Models reading debug_locks.
func (c *Checker) Enabled() bool { return c.on.Load() }

// Reset forgets everything learned: the graph, the chain cache, which problems
// were reported, and what every goroutine holds. For tests; the handler and options
// stay. Models lockdep_reset(), which the kernel's locking self-tests call between
// cases, and goes further: lockdep_reset() empties the chain cache and the calling
// task's held locks, but keeps the graph and the other tasks' locks.
func (c *Checker) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes = nil
	c.nedges = 0
	c.bfsSeen = nil
	c.reported = make(map[reportKey]bool)
	c.chains.Store(newChainTable(256))
	c.gen.Add(1)
}

// Stats describes the size of what a checker has learned. Models three of the
// counts /proc/lockdep_stats prints: lock-classes, direct dependencies and
// dependency chains.
type Stats struct {
	Classes int // classes with a node in the graph
	Edges   int // dependencies
	Chains  int // validated chains in the cache
}

// Stats returns the current sizes of the graph and the chain cache. Models
// /proc/lockdep_stats.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Edges: c.nedges, Chains: c.chains.Load().n}
	for _, n := range c.nodes {
		if n != nil {
			s.Classes++
		}
	}
	return s
}

// HasDependency reports whether the graph holds the dependency from -> to: to was
// taken while from was held (or the order was primed). Models looking up from's
// locks_after list, which /proc/lockdep prints.
func (c *Checker) HasDependency(from, to *Class) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(from.id) >= len(c.nodes) || c.nodes[from.id] == nil {
		return false
	}
	return c.nodes[from.id].edge(to.id) != nil
}

// Held returns the locks the calling goroutine holds in c, outermost first. Models
// lockdep_print_held_locks(current), as data.
func (c *Checker) Held() []LockInfo {
	if !c.on.Load() {
		return nil
	}
	t := c.task()
	defer c.idle(t)
	return heldInfo(t.held)
}

// deliver hands reports to the handler, dropping repeats unless ReportAll is set.
// It must be called without c.mu held.
func (c *Checker) deliver(reps []*Report, keys []reportKey) {
	if len(reps) == 0 {
		return
	}
	if !c.reportAll.Load() {
		c.mu.Lock()
		n := 0
		for i, r := range reps {
			if !c.reported[keys[i]] {
				c.reported[keys[i]] = true
				reps[n] = r
				n++
			}
		}
		c.mu.Unlock()
		reps = reps[:n]
	}
	h := *c.handler.Load()
	for _, r := range reps {
		h(r)
	}
}
