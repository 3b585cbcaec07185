package lockdep

import (
	"fmt"
	"runtime"
	"strings"
)

// Kind names the rule a Report is about. Models the choice among the kernel's
// print_*_bug() splats (print_circular_bug(), print_deadlock_bug(), ...); the GPU
// rules have kinds of their own.
type Kind uint8

const (
	// KindCircular: a new dependency closes a cycle in the lock order (an AB-BA
	// of any length). The kernel's "possible circular locking dependency detected".
	KindCircular Kind = iota + 1
	// KindRecursive: a lock class is taken while already held, without a nest
	// lock or a subclass. The kernel's "possible recursive locking detected".
	KindRecursive
	// KindBadUnlock: a release of a lock this goroutine does not hold. The
	// kernel's "bad unlock balance detected!".
	KindBadUnlock
	// KindNestNotHeld: an acquisition names a nest lock that is not held. The
	// kernel's print_lock_nested_lock_not_held().
	KindNestNotHeld
	// KindAssert: AssertHeld or AssertNotHeld failed. The kernel's WARN_ON in
	// lockdep_assert_held() and lockdep_assert_not_held().
	KindAssert
	// KindBadClass: a lock was annotated without a class. The kernel has no
	// direct counterpart: a lockdep_map without a key is a WARN or a "trying to
	// register non-static key" there.
	KindBadClass
	// KindBadSignalling: EndSignalling with a cookie that does not match an open
	// section of this goroutine, or sections closed out of order. The kernel has
	// no such check: its cookie is a bool.
	KindBadSignalling

	// KindSignallingDeadlock (GPU rule e): a cycle through dma_fence_map: a lock
	// taken inside a fence signalling section is elsewhere held while waiting on a
	// fence, so the waiter and the signaller can block each other. The kernel
	// reports it as a circular dependency.
	KindSignallingDeadlock
	// KindReclaimInSignalling (GPU rule d): an allocation that may enter reclaim
	// inside a fence signalling section, while reclaim may wait on fences. The
	// kernel reports it as a circular dependency through fs_reclaim.
	KindReclaimInSignalling
	// KindFenceWaitInSignalling (GPU rule c): a dma fence wait inside a signalling
	// section. Reported only with strict signalling checks (see StrictSignalling):
	// the kernel does not report it.
	KindFenceWaitInSignalling
	// KindLRWaitUnderMM (GPU rule a): a wait on a long-running fence while holding a
	// memory-management lock, which eviction may need: the LR work may never finish.
	// No kernel counterpart (see Checker.MightWaitLongRunning).
	KindLRWaitUnderMM
	// KindLRWaitInSignalling: a wait on a long-running fence inside a dma fence
	// signalling section, which would make a dma fence depend on work that may never
	// complete. No kernel counterpart (see Checker.MightWaitLongRunning).
	KindLRWaitInSignalling
	// KindLRFenceInReservation (GPU rule b): a long-running fence attached to a
	// reservation object, where every memory-management path would wait on it.
	// No kernel counterpart (see Checker.LongRunningInReservation).
	KindLRFenceInReservation
	// KindFenceLeak: a fence that can no longer be signalled (the garbage
	// collector reclaimed it) still had waiters or callbacks. No kernel
	// counterpart (see Checker.FenceLeaked).
	KindFenceLeak
)

var kindTitles = [...]string{
	KindCircular:              "possible circular locking dependency detected",
	KindRecursive:             "possible recursive locking detected",
	KindBadUnlock:             "bad unlock balance detected!",
	KindNestNotHeld:           "nest lock not held",
	KindAssert:                "lock held assertion failed",
	KindBadClass:              "lock used without a lock class",
	KindBadSignalling:         "bad dma_fence signalling annotation",
	KindSignallingDeadlock:    "possible circular locking dependency through dma_fence signalling",
	KindReclaimInSignalling:   "memory allocation that may reclaim inside a dma_fence signalling section",
	KindFenceWaitInSignalling: "dma_fence wait inside a dma_fence signalling section",
	KindLRWaitUnderMM:         "long-running fence wait while holding a memory-management lock",
	KindLRWaitInSignalling:    "long-running fence wait inside a dma_fence signalling section",
	KindLRFenceInReservation:  "long-running fence attached to a dma_resv",
	KindFenceLeak:             "unsignalled dma_fence dropped with waiters",
}

var kindNames = [...]string{
	KindCircular:              "circular",
	KindRecursive:             "recursive",
	KindBadUnlock:             "bad-unlock",
	KindNestNotHeld:           "nest-not-held",
	KindAssert:                "assert",
	KindBadClass:              "bad-class",
	KindBadSignalling:         "bad-signalling",
	KindSignallingDeadlock:    "signalling-deadlock",
	KindReclaimInSignalling:   "reclaim-in-signalling",
	KindFenceWaitInSignalling: "fence-wait-in-signalling",
	KindLRWaitUnderMM:         "lr-wait-under-mm",
	KindLRWaitInSignalling:    "lr-wait-in-signalling",
	KindLRFenceInReservation:  "lr-fence-in-reservation",
	KindFenceLeak:             "fence-leak",
}

// String returns a short name for k, such as "circular". The kernel has no
// counterpart: it names a splat only by its headline (see Title).
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Title returns the headline a report of kind k prints, in the kernel's words where
// the kernel has the report. Models the headline of the kernel's splat.
func (k Kind) Title() string {
	if int(k) < len(kindTitles) && kindTitles[k] != "" {
		return kindTitles[k]
	}
	return k.String()
}

// LockInfo describes one lock in a report. Models the fields of struct held_lock
// a splat draws on: the class, the read and trylock bits, and acquire_ip.
type LockInfo struct {
	Class string
	Mode  Mode
	Try   bool
	Site  runtime.Frame // where it was acquired: the first frame outside gpusync
}

// A Link is one dependency edge of a chain: To was acquired while From was held,
// first by goroutine Goroutine at Stack. Models struct lock_list, one dependency
// with the stack trace saved when it was added.
type Link struct {
	From, To  string
	Goroutine int64
	Stack     []runtime.Frame
}

// A Report is one rule violation, with what is needed to understand it: the lock
// involved, the other lock or the existing chain it conflicts with, the locks the
// goroutine held, and where it was. String prints it like the kernel's splat.
// Models a lockdep splat, as data.
//
// A *Report is an error, so a panicking handler's value can be recovered and
// inspected with errors.As.
type Report struct {
	Kind      Kind
	Goroutine int64
	// Lock is the lock being acquired, released or checked; nil for rules about a
	// wait or an object rather than a lock.
	Lock *LockInfo
	// Other is the held lock that conflicts with Lock: for a cycle, the held lock
	// the new dependency starts from; for recursion, the earlier acquisition.
	Other *LockInfo
	// New is the dependency that closed a cycle (Other -> Lock), taken now.
	New *Link
	// Chain is the existing dependency chain from Lock back to Other, in order.
	Chain []Link
	// Held is what the goroutine held, outermost first.
	Held []LockInfo
	// Stack is where the goroutine was when the violation was seen.
	Stack []runtime.Frame
	// Detail adds what the rule is and what the objects were, where the kind
	// alone does not say it.
	Detail string
}

// Error returns the report's headline, so that a *Report can travel as an error.
// Models the first line of the kernel's splat.
func (r *Report) Error() string {
	s := "lockdep: " + r.Kind.Title()
	if c := r.Cycle(); len(c) > 0 {
		s += ": " + strings.Join(append(c, c[0]), " -> ")
	} else if r.Lock != nil {
		s += ": " + r.Lock.Class
	}
	return s
}

// Cycle returns the classes of a cycle report in dependency order, starting with
// the held lock the new dependency leaves from: for an AB-BA where A was taken
// after B, it returns [B A]. It returns nil for other reports. Models the class
// list of the kernel's "the existing dependency chain (in reverse order) is" part.
func (r *Report) Cycle() []string {
	if r.New == nil {
		return nil
	}
	out := []string{r.New.From, r.New.To}
	// The chain runs from New.To back to New.From; its last link ends where the
	// cycle started.
	for i := 0; i+1 < len(r.Chain); i++ {
		out = append(out, r.Chain[i].To)
	}
	return out
}

const (
	wideRule   = "======================================================"
	narrowRule = "------------------------------------------------------"
)

// String formats r the way the kernel prints a lockdep splat: the headline, the lock
// being taken and the one held, the existing chain with a stack per link, a
// scenario, the held locks and the backtrace.
func (r *Report) String() string {
	var b strings.Builder
	title := "WARNING: " + r.Kind.Title()
	fmt.Fprintf(&b, "\n%s\n%s\n%s\n", wideRule, title, narrowRule)
	g := fmt.Sprintf("goroutine %d", r.Goroutine)
	switch r.Kind {
	case KindCircular, KindSignallingDeadlock, KindReclaimInSignalling:
		r.writeCircular(&b, g)
	case KindRecursive:
		fmt.Fprintf(&b, "%s is trying to acquire lock:\n %s\n\nbut %s is already holding lock:\n %s\n",
			g, r.Lock.describe(), g, r.Other.describe())
		fmt.Fprintf(&b, "\nother info that might help us debug this:\n Possible unsafe locking scenario:\n\n")
		fmt.Fprintf(&b, "       CPU0\n       ----\n  lock%s;\n  lock%s;\n\n *** DEADLOCK ***\n\n", paren(r.Other.Class), paren(r.Lock.Class))
		fmt.Fprintf(&b, " May be due to missing lock nesting notation\n")
	case KindBadUnlock:
		fmt.Fprintf(&b, "%s is trying to release lock %s at:\n%s\nbut there are no more locks to release!\n",
			g, paren(r.Lock.Class), frameLine(r.Lock.Site))
	default:
		if r.Lock != nil {
			fmt.Fprintf(&b, "%s: lock %s\n", g, r.Lock.describe())
		} else {
			fmt.Fprintf(&b, "%s:\n", g)
		}
		if r.Other != nil {
			fmt.Fprintf(&b, "while holding %s\n", r.Other.describe())
		}
	}
	if r.Detail != "" {
		fmt.Fprintf(&b, "\n%s\n", r.Detail)
	}
	if len(r.Held) == 0 {
		fmt.Fprintf(&b, "\nno locks held by %s.\n", g)
	} else {
		fmt.Fprintf(&b, "\n%d lock%s held by %s:\n", len(r.Held), plural(len(r.Held)), g)
		for i, h := range r.Held {
			fmt.Fprintf(&b, " #%d: %s\n", i, h.describe())
		}
	}
	fmt.Fprintf(&b, "\nstack backtrace:\n")
	writeStack(&b, r.Stack)
	return b.String()
}

func (r *Report) writeCircular(b *strings.Builder, g string) {
	fmt.Fprintf(b, "%s is trying to acquire lock:\n %s\n\nbut %s is already holding lock:\n %s\n\n",
		g, r.Lock.describe(), g, r.Other.describe())
	fmt.Fprintf(b, "which lock already depends on the new lock.\n\n\nthe existing dependency chain (in reverse order) is:\n")
	// Reverse order as the kernel prints it: #n is the held lock, #0 the new one.
	n := len(r.Chain)
	for i := n - 1; i >= 0; i-- {
		l := r.Chain[i]
		fmt.Fprintf(b, "\n-> #%d %s (taken after %s by goroutine %d):\n", i+1, paren(l.To), paren(l.From), l.Goroutine)
		writeStack(b, l.Stack)
	}
	if r.New != nil {
		fmt.Fprintf(b, "\n-> #0 %s (taken now, after %s):\n", paren(r.New.To), paren(r.New.From))
		writeStack(b, r.New.Stack)
	}
	fmt.Fprintf(b, "\nother info that might help us debug this:\n\n")
	cycle := r.Cycle()
	if len(cycle) == 2 {
		a, bb := paren(cycle[1]), paren(cycle[0])
		fmt.Fprintf(b, " Possible unsafe locking scenario:\n\n")
		fmt.Fprintf(b, "       %-26s%s\n", "CPU0", "CPU1")
		fmt.Fprintf(b, "       %-26s%s\n", "----", "----")
		fmt.Fprintf(b, "  lock%s;\n", bb)
		fmt.Fprintf(b, "  %-31s lock%s;\n", "", a)
		fmt.Fprintf(b, "  %-31s lock%s;\n", "", bb)
		fmt.Fprintf(b, "  lock%s;\n\n *** DEADLOCK ***\n", a)
	} else if len(cycle) > 2 {
		fmt.Fprintf(b, "Chain exists of:\n  ")
		names := make([]string, len(cycle))
		for i, c := range cycle {
			names[i] = paren(c)
		}
		fmt.Fprintf(b, "%s --> %s\n\n *** DEADLOCK ***\n", strings.Join(names[1:], " --> "), names[0])
	}
}

func (l *LockInfo) describe() string {
	if l == nil {
		return "(none)"
	}
	s := paren(l.Class) + "{" + l.Mode.String()
	if l.Try {
		s += ",try"
	}
	s += "}"
	if l.Site.Function != "" {
		s += ", at: " + frameLine(l.Site)
	}
	return s
}

func paren(s string) string { return "(" + s + ")" }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func frameLine(f runtime.Frame) string {
	if f.Function == "" {
		return "?"
	}
	return fmt.Sprintf("%s (%s:%d)", f.Function, f.File, f.Line)
}

func writeStack(b *strings.Builder, fs []runtime.Frame) {
	if len(fs) == 0 {
		b.WriteString("       (no stack)\n")
		return
	}
	for _, f := range fs {
		fmt.Fprintf(b, "       %s\n           %s:%d\n", f.Function, f.File, f.Line)
	}
}
