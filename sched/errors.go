package sched

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is a call the kernel refuses with -EINVAL: zero credits, credits
	// above the scheduler's limit, no scheduler for an entity, a nil fence where one
	// is needed. Nothing changed.
	ErrInvalid = errors.New("sched: invalid argument")
	// ErrNoRunQueue is NewJob on an entity whose schedulers are all closed (the
	// kernel's -ENOENT from drm_sched_job_init once no scheduler is ready).
	ErrNoRunQueue = errors.New("sched: entity has no run queue")
	// ErrKilled is Push to a killed entity. The job is not run: its fences are
	// signalled with ErrSearch after the entity's earlier jobs, as the kernel does
	// for jobs left in a killed entity's queue. NewJob on a killed entity returns it
	// too, with nothing made (the kernel's drm_sched_job_init does not check).
	ErrKilled = errors.New("sched: push to a killed entity")
	// ErrClosed is an operation on a scheduler after Close.
	ErrClosed = errors.New("sched: scheduler closed")
	// ErrState is a job operation out of order: Arm twice, Push before Arm, a
	// dependency added after Arm, Cleanup after Arm.
	ErrState = errors.New("sched: job used out of order")

	// ErrSearch is the error of every job of a killed entity that never ran (the
	// kernel's -ESRCH).
	ErrSearch = errors.New("sched: entity killed before the job ran (ESRCH)")
	// ErrCanceled is the error of a job cancelled by recovery: a job of a guilty
	// entity, or one without a hardware fence when the scheduler restarts (the
	// kernel's -ECANCELED).
	ErrCanceled = errors.New("sched: job canceled (ECANCELED)")
	// ErrTimedOut is the error drivers give the hardware fence of a job that hung
	// (the kernel's -ETIMEDOUT); the scheduler core never sets it itself.
	ErrTimedOut = errors.New("sched: job timed out (ETIMEDOUT)")

	errCreditsZero   = fmt.Errorf("%w: a job needs at least one credit", ErrInvalid)
	errLongRunningHW = fmt.Errorf("%w: RunJob returned a long-running fence; a finished fence must not follow it", ErrInvalid)
)
