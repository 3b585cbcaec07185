package sched

import "time"

// EventKind names a scheduler event. The kinds follow the kernel's drm_sched
// tracepoints; Timeout has no tracepoint in the kernel.
type EventKind uint8

const (
	// EventQueued: a job was pushed to its entity (drm_sched_job_queue).
	EventQueued EventKind = iota + 1
	// EventDependency: a job must wait for a fence before it can run
	// (drm_sched_job_add_dep / drm_sched_job_unschedulable).
	EventDependency
	// EventRun: a job was handed to the driver's RunJob (drm_sched_job_run).
	EventRun
	// EventDone: a job's hardware fence signalled (drm_sched_job_done).
	EventDone
	// EventTimeout: the TDR fired for a job.
	EventTimeout
)

var eventNames = [...]string{"", "queued", "dependency", "run", "done", "timeout"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "invalid"
}

// An Event is one scheduler trace record. Models the drm_sched tracepoints of
// gpu_scheduler_trace.h (drm_sched_job_queue, drm_sched_job_add_dep,
// drm_sched_job_run, drm_sched_job_done), plus a timeout event, which has no
// tracepoint in the kernel.
type Event struct {
	Kind  EventKind
	Time  time.Time
	Sched string // scheduler name (the ring)
	// Entity and Job identify the job: Entity is the entity's id, Job is the seqno
	// of its finished fence on the entity's timeline.
	Entity uint64
	Job    uint64
	// FenceContext is the context of the entity's scheduled fences (finished
	// fences use the next one), so a dependency (DepContext, DepSeqno) can be matched
	// to the job that made it.
	FenceContext uint64
	// Credits the job takes.
	Credits uint32
	// DepContext and DepSeqno name the fence waited for (EventDependency).
	DepContext, DepSeqno uint64
	// Err is the job's error (EventDone, EventTimeout).
	Err error
	// Status is the driver's verdict (EventTimeout).
	Status Status
}

// A Tracer receives scheduler events. Trace is called synchronously from the
// scheduler's goroutines and from fence callbacks: it must be quick, must not block,
// and must be safe for concurrent use. Models a probe attached to the drm_sched
// tracepoints.
type Tracer interface {
	Trace(Event)
}

// TracerFunc adapts a function to Tracer.
type TracerFunc func(Event)

// Trace calls f(e).
func (f TracerFunc) Trace(e Event) { f(e) }
