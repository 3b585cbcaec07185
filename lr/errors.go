package lr

import "errors"

var (
	// ErrWouldBlock is TryPush on a queue whose ring is full (the kernel's
	// -EWOULDBLOCK from the Xe exec ioctl): retry once a job completed.
	ErrWouldBlock = errors.New("lr: ring full, would block")
	// ErrBanned is a push to a queue that was banned after an error (a hardware
	// fault, or its VM was killed): the kernel's -ECANCELED. AddQueue and
	// AddBuffer on a killed VM return it too (the kernel's -ENOENT there).
	ErrBanned = errors.New("lr: queue banned")
	// ErrClosed is an operation on a closed queue or VM.
	ErrClosed = errors.New("lr: closed")
	// ErrQueueReset is the error of a preempt fence whose queue was reset before it
	// could be suspended (the kernel's -ENOENT in xe_preempt_fence_work_func).
	ErrQueueReset = errors.New("lr: queue reset before preemption")
	// ErrTimedOut is what SuspendWait returns when the queue did not get off the
	// hardware in time (the kernel's -ETIME from suspend_wait). It is the one
	// preempt fence error that kills the VM: the rebind worker then bans every
	// queue on it, as xe_vm_kill() does. A SuspendWait that gives up on a deadline
	// of its own (context.DeadlineExceeded) counts as a timeout too.
	ErrTimedOut = errors.New("lr: preemption timed out (ETIME)")
	// ErrAgain is what SuspendWait returns when the queue's suspension cannot be
	// waited for now and the wait should be retried (the kernel's -EAGAIN from
	// suspend_wait). The preempt worker then puts the fence's work back at the
	// end of its queue, with no error, and waits again when its turn comes, as
	// preempt_fence_work_func() re-queues itself; a driver must not return it
	// forever, as the worker would then retry forever.
	ErrAgain = errors.New("lr: suspension not settled, try again (EAGAIN)")
)
