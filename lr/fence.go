package lr

import "github.com/gpusync/gpusync/fence"

// NewContext returns a context of long-running completion fences: fences that
// say when LR work finished, with no bound on when that is. They can be waited on
// (lockdep reports a wait under a memory-management lock or in a signalling
// section), take callbacks only through fence.AddCallbackUnbounded, and are refused
// by reservation objects and by the scheduler as hardware fences. Models the LR
// completion fences of the 2023 dri-devel RFC.
func NewContext(driver, timeline string, opts ...fence.ContextOption) *fence.Context {
	return fence.NewContext(driver, timeline, append(opts, fence.LongRunning())...)
}
