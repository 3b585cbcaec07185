package fence

import "runtime"

// The fence lock is a bit of the fence's flags word, not a sync.Mutex: the kernel's
// fence->lock is a spinlock, and keeping the lock in the word that also holds the
// signalled and enable bits lets one atomic operation take the lock and change
// them. Signal without a timestamp takes the lock and marks the fence signalled in
// a single compare-and-swap (with no callback queued, it marks the fence without
// taking the lock at all: see signal), and AddCallback sets the enable bit in the
// same compare-and-swap that drops the lock: signalling costs one or two atomic
// operations where a mutex and a flag would cost three, and a callback round trip
// four where it would cost six.
//
// Every write to flags happens with the lock held, or is the compare-and-swap
// that takes it or that marks the fence signalled while it is free, so the holder
// may compute the word it leaves behind from the word it found.
//
// A goroutine that finds the lock taken yields until it is free, as a kernel CPU
// spins on fence->lock. Sections are short (the longest is a signal running its
// callbacks), and a callback or hook must not block, which in the kernel would be
// sleeping in atomic context. Yielding, rather than sleeping on a shared wait
// queue, also keeps goroutines of different testing/synctest bubbles apart: the
// runtime forbids waking a bubbled goroutine from outside its bubble.

// lock takes f's lock.
func (f *Fence) lock() {
	fl := f.flags.Load()
	if fl&flagLocked == 0 && f.flags.CompareAndSwap(fl, fl|flagLocked) {
		return
	}
	f.lockSlow()
}

func (f *Fence) lockSlow() {
	for {
		fl := f.flags.Load()
		if fl&flagLocked == 0 {
			if f.flags.CompareAndSwap(fl, fl|flagLocked) {
				return
			}
			continue
		}
		runtime.Gosched()
	}
}

// tryLock takes f's lock if it is free, and reports whether it did.
func (f *Fence) tryLock() bool {
	fl := f.flags.Load()
	return fl&flagLocked == 0 && f.flags.CompareAndSwap(fl, fl|flagLocked)
}

// lockToSignal takes f's lock and marks f signalled in one atomic operation,
// setting the flags in also, and reports false, without taking the lock, if f had
// already signalled.
func (f *Fence) lockToSignal(also uint32) bool {
	for {
		fl := f.flags.Load()
		switch {
		case fl&flagSignaled != 0:
			return false
		case fl&flagLocked == 0:
			if f.flags.CompareAndSwap(fl, fl|flagLocked|flagSignaled|also) {
				return true
			}
		default:
			runtime.Gosched()
		}
	}
}

// unlock drops f's lock.
func (f *Fence) unlock() { f.unlockSet(0) }

// unlockSet drops f's lock and sets the flags in set, in one atomic operation.
func (f *Fence) unlockSet(set uint32) {
	for {
		fl := f.flags.Load()
		if f.flags.CompareAndSwap(fl, (fl|set)&^flagLocked) {
			return
		}
	}
}
