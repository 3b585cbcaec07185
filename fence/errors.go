package fence

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is a call the kernel would refuse with -EINVAL: a nil fence or
	// callback, a fence signalled twice, an error set after signalling, an empty
	// WaitAny. The fence is unchanged. Models -EINVAL.
	ErrInvalid = errors.New("fence: invalid argument")
	// ErrSignaled is AddCallback's answer for a fence that has already signalled
	// (the kernel's -ENOENT): the callback was not queued and will not run. Models
	// dma_fence_add_callback()'s -ENOENT.
	ErrSignaled = errors.New("fence: already signalled")
	// ErrDeadlock is the error a fence gets when its last reference is dropped while
	// it is unsignalled with callbacks pending: the kernel sets -EDEADLK and signals
	// it, so waiters are not left hanging. Models dma_fence_release()'s -EDEADLK.
	ErrDeadlock = errors.New("fence: released unsignalled with callbacks pending")
	// ErrNoEntry is the error of every point still pending when its sw_sync
	// timeline is closed, and Timeline.Deadline's for a point with no deadline.
	// Models the -ENOENT that sw_sync_debugfs_release() sets and that
	// SW_SYNC_IOC_GET_DEADLINE returns.
	ErrNoEntry = errors.New("fence: timeline closed before the point signalled")
	// ErrLongRunning is AddCallback's answer for a long-running fence: such a
	// callback may never run, so it needs the explicit AddCallbackUnbounded. It has
	// no kernel counterpart: the kernel has no long-running fences (see LongRunning).
	ErrLongRunning = errors.New("fence: callback on a long-running fence needs AddCallbackUnbounded")
	// ErrNotYetAdded is Chain.FindSeqno's answer for a point beyond the head of
	// the chain. Models dma_fence_chain_find_seqno()'s -EINVAL.
	ErrNotYetAdded = fmt.Errorf("%w: chain point not yet added", ErrInvalid)

	errSignalTwice       = fmt.Errorf("%w: fence already signalled", ErrInvalid)
	errLateError         = fmt.Errorf("%w: error set after signalling", ErrInvalid)
	errReinit            = fmt.Errorf("%w: Init of a nil fence or of one already initialised", ErrInvalid)
	errNilError          = fmt.Errorf("%w: SetError with a nil error", ErrInvalid)
	errCallbackUse       = fmt.Errorf("%w: callback already queued on a fence", ErrInvalid)
	errNotSyncPt         = fmt.Errorf("%w: not a sw_sync timeline point", ErrInvalid)
	errNoDeadline  error = noDeadlineError{}
)

// noDeadlineError is Timeline.Deadline's error for a point without a deadline: it
// is ErrNoEntry (errors.Is), with a message of its own, as ErrNoEntry's speaks of a
// closed timeline.
type noDeadlineError struct{}

func (noDeadlineError) Error() string        { return "fence: no deadline set on the point" }
func (noDeadlineError) Is(target error) bool { return target == ErrNoEntry }
