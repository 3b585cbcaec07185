package lockdep_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// An Enable while checking is already on must not start a new generation: that
// would forget the locks every goroutine holds, so an assertion on them fails and
// an inversion against them goes unseen.
func TestRedundantEnableKeepsHeldLocks(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	a := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}
	b := &lockdep.Mutex{Class: lockdep.NewClass("B"), Checker: c}

	a.Lock()
	c.Enable()
	a.AssertHeld()
	assert.Equal(t, []string{"A"}, heldClassNames(c))
	b.Lock() // learns A -> B
	b.Unlock()
	a.Unlock()
	lockdeptest.RequireClean(t, col)
	assert.True(t, c.HasDependency(a.Class, b.Class))

	b.Lock()
	a.Lock()
	a.Unlock()
	b.Unlock()
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
}

// A Disable while checking is already off is a no-op too; the Enable after it is
// the one real transition and forgets what was held before the first Disable.
func TestRedundantDisableThenEnableForgetsOnce(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	a := newTestMaps(c, "A")[0]
	a.Acquire(lockdep.Exclusive)
	c.Disable()
	c.Disable()
	assert.False(t, c.Enabled())
	c.Enable()
	assert.Empty(t, c.Held())
	a.Release() // taken before the Disable: forgotten, not reported
	lockdeptest.RequireClean(t, col)
}

// Many goroutines enabling an enabled checker at once leave a lock held by another
// goroutine known to the checker.
func TestConcurrentRedundantEnableKeepsHeldLocks(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	a := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}

	locked, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		a.Lock()
		close(locked)
		<-release
		a.AssertHeld()
		a.Unlock()
	}()
	<-locked
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Enable()
			}
		})
	}
	wg.Wait()
	close(release)
	<-done
	lockdeptest.RequireClean(t, col)
}
