// Package lockdeptest provides lockdep checkers for tests: isolated from every
// other test's graph, and wired to fail the test on a report, or to collect reports
// for the test to assert on.
package lockdeptest

import (
	"testing"

	"github.com/gpusync/gpusync/lockdep"
)

// Fail returns a handler that fails tb with the report's splat, and lets the test
// go on, as t.Errorf does. Reports from goroutines other than the test's are fine:
// Errorf may be called from any goroutine. The kernel has no counterpart; the
// closest is booting with panic_on_warn, so that the first splat fails the run.
func Fail(tb testing.TB) lockdep.Handler {
	return func(r *lockdep.Report) {
		tb.Helper()
		tb.Errorf("lockdep report %s:%s", r.Kind, r.String())
	}
}

// New returns a fresh, enabled checker whose reports fail tb. Pass it to the objects
// under test. opts apply after the handler is set. The kernel has no counterpart:
// it has one lockdep (see lockdep.NewChecker).
func New(tb testing.TB, opts ...lockdep.Option) *lockdep.Checker {
	tb.Helper()
	return lockdep.NewChecker(append([]lockdep.Option{lockdep.WithHandler(Fail(tb))}, opts...)...)
}

// Collect returns a fresh, enabled checker that keeps its reports in the returned
// Collector instead of failing the test, for tests that expect reports. The kernel
// has no counterpart (see New).
func Collect(tb testing.TB, opts ...lockdep.Option) (*lockdep.Checker, *lockdep.Collector) {
	tb.Helper()
	col := new(lockdep.Collector)
	return lockdep.NewChecker(append([]lockdep.Option{lockdep.WithHandler(col.Handle)}, opts...)...), col
}

// RequireKinds fails tb unless col holds exactly the given kinds, in order, and
// prints every report it holds when it does not. Plays the part of dotest() in the
// kernel's lib/locking-selftest.c, which checks each case's expected outcome.
func RequireKinds(tb testing.TB, col *lockdep.Collector, want ...lockdep.Kind) {
	tb.Helper()
	got := col.Kinds()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == want[i]
	}
	if ok {
		return
	}
	msg := ""
	for _, r := range col.Reports() {
		msg += r.String()
	}
	tb.Fatalf("lockdep reports: got kinds %v, want %v%s", got, want, msg)
}

// RequireClean fails tb if col holds any report: RequireKinds with no kinds, the
// SUCCESS outcome of the kernel's locking self-tests.
func RequireClean(tb testing.TB, col *lockdep.Collector) {
	tb.Helper()
	RequireKinds(tb, col)
}
