package fence

import (
	"sync"
	"time"
)

// stubContext is context 0, which AllocContexts never hands out.
var stubContext = &Context{id: 0, driver: "stub", timeline: "stub"}

var stub struct {
	once sync.Once
	f    *Fence
}

// Stub returns the stub fence: one signalled fence shared by every caller, for
// "nothing to wait for". It is signalled on first use, with that moment as its
// timestamp. Models dma_fence_get_stub().
func Stub() *Fence {
	stub.once.Do(func() { stub.f = NewSignaled(time.Now()) })
	return stub.f
}

// NewSignaled returns a new fence on the stub context, already signalled with the
// timestamp ts. Models dma_fence_allocate_private_stub().
func NewSignaled(ts time.Time) *Fence {
	f := stubContext.New(0)
	f.flags.Store(flagEnableSignal)
	f.flags.Or(flagSignaled)
	if s := stamp(ts); s != noStamp {
		f.ts = s
		f.flags.Or(flagStamped)
	}
	return f
}
