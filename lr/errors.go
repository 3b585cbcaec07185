package lr

import "errors"

var (
	// ErrWouldBlock is TryPush on a queue whose ring is full (the kernel's
	// -EWOULDBLOCK from the Xe exec ioctl): retry once a job completed.
	ErrWouldBlock = errors.New("lr: ring full, would block")
	// ErrBanned is a push to a queue that was banned after an error (a failed
	// preemption, a hardware fault): the kernel's -ECANCELED.
	ErrBanned = errors.New("lr: queue banned")
	// ErrClosed is an operation on a closed queue or VM.
	ErrClosed = errors.New("lr: closed")
	// ErrQueueReset is the error of a preempt fence whose queue was reset before it
	// could be suspended (the kernel's -ENOENT in xe_preempt_fence_work_func).
	ErrQueueReset = errors.New("lr: queue reset before preemption")
)
