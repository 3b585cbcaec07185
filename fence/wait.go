package fence

import "context"

// WaitAny blocks until one of fences signals or ctx is done. It returns the index of
// the first signalled fence in the slice (the lowest index among those signalled
// when it looks), or ctx.Err(). With ctx already done it only polls the fences and
// enables signalling on none. No fences is an error wrapping ErrInvalid. Every
// callback it queued is removed before it returns. Models
// dma_fence_wait_any_timeout().
func WaitAny(ctx context.Context, fences ...*Fence) (int, error) {
	if len(fences) == 0 {
		return -1, ErrInvalid
	}
	for _, f := range fences {
		if f == nil {
			return -1, ErrInvalid
		}
	}
	for _, f := range fences {
		f.annotateWait()
	}
	for i, f := range fences {
		if f.IsSignaled() {
			return i, nil
		}
	}
	if err := ctx.Err(); err != nil {
		// A zero timeout: dma_fence_wait_any_timeout() only polls, and enables
		// signalling on no fence.
		return -1, err
	}
	woken := make(chan struct{}, 1)
	wake := func(*Fence, *Callback) {
		select {
		case woken <- struct{}{}:
		default:
		}
	}
	cbs := make([]Callback, len(fences))
	defer func() {
		for i, f := range fences {
			f.RemoveCallback(&cbs[i])
		}
	}()
	for i, f := range fences {
		if err := f.addCallback(&cbs[i], wake); err != nil {
			return i, nil // already signalled
		}
	}
	select {
	case <-woken:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	for i, f := range fences {
		if f.signaled() {
			return i, nil
		}
	}
	panic("fence: WaitAny woken with no fence signalled")
}
