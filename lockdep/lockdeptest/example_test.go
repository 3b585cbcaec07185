package lockdeptest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// fakeT stands in for the *testing.T a real test passes, so the example can show
// what the test would see.
type fakeT struct {
	testing.TB
	failures []string
}

func (t *fakeT) Helper() {}
func (t *fakeT) Errorf(format string, args ...any) {
	t.failures = append(t.failures, fmt.Sprintf(format, args...))
}

// In a test, lockdeptest.New(t) gives an isolated checker that fails the test with
// the kernel-style splat of any report.
func ExampleNew() {
	t := &fakeT{}
	c := lockdeptest.New(t)

	// Two buffer objects of one class, locked without a nest lock. (Annotations
	// only: with real mutexes this would be reported, then deadlock.)
	class := lockdep.NewClass("bo.lock")
	a := &lockdep.Map{Class: class, Checker: c}
	b := &lockdep.Map{Class: class, Checker: c}
	a.Acquire(lockdep.Exclusive)
	b.Acquire(lockdep.Exclusive)
	b.Release()
	a.Release()

	for _, f := range t.failures {
		fmt.Println(strings.Split(f, "\n")[0])
		fmt.Println(strings.Contains(f, "WARNING: possible recursive locking detected"))
	}
	// Output:
	// lockdep report recursive:
	// true
}
