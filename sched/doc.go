// Package sched models the kernel's DRM GPU scheduler (drm_sched): it takes jobs
// from many clients' queues (entities), waits for each job's dependencies, feeds
// the hardware ring within its credit limit, makes each job's finished fence follow
// the hardware fence, and recovers from hangs with a timeout (TDR).
//
// # Job lifecycle
//
//	e.NewJob(credits, payload)      fallible: validates, no fences yet
//	  j.AddDependency(f)            fences to wait for; AddImplicitDependencies(bo, write)
//	j.Arm()                         point of no return: scheduled + finished fences exist
//	  (publish j.Finished() in reservation objects, syncobjs ...)
//	j.Push()                        queued on the entity, in order
//	  ... dependencies signal (a fence of the same ring: its scheduled fence suffices)
//	  ... the run queue picks the entity, credits allow
//	RunJob(j) -> hardware fence     j.Scheduled() signals
//	  ... hardware fence signals    j.Finished() signals with its error; credits return
//	FreeJob(j)                      in ring order, from the free worker; then
//	                                the scheduler drops j's dependencies
//
// A job that hangs is caught by the TDR: when the job at the head of the hardware
// queue has run for Timeout, TimedOutJob is called. The driver may Stop the
// scheduler, reset the hardware, ResubmitJobs (deprecated), and Start it again,
// which completes the jobs that lost their hardware fence with an error; it answers
// StatusReset, StatusDeviceGone, or StatusNoHang for a false alarm. A killed entity
// (Kill, Destroy) never runs its queued jobs: they complete with ErrSearch, in
// order, after the jobs before them and after their own dependencies.
//
// # Entities and run queues
//
// An Entity is one client's queue for one kind of engine, with a priority. It runs
// on one scheduler at a time; given several it moves, while idle, to the least
// loaded. A scheduler with a single entity is the 1:1 mode of firmware-scheduled
// drivers. The run queue holds only entities that can run, ordered by the policy:
// PolicyFair (the kernel's current one: virtual GPU time, priorities as weights),
// PolicyFIFO or PolicyRoundRobin (strict priority). Picking is O(log n).
//
// # Rules the model enforces
//
// RunJob, TimedOutJob and the completion path run inside a fence signalling section
// (lockdep.BeginSignalling): a RunJob that waits on a fence, or allocates in a way
// that can enter reclaim, is reported by lockdep. Credits above the limit are an
// error at NewJob (the kernel warns and clamps when the job is picked). A job
// cannot depend on a long-running fence.
//
// # Goroutines
//
// New starts two goroutines, the submit worker (run-job and free-job work, in
// order, like the kernel's ordered workqueue) and the TDR worker; Close stops and
// joins them. Completion runs in whichever goroutine signals the hardware fence.
// Tests run the scheduler inside a testing/synctest bubble, so timeouts and job
// durations use virtual time (see schedtest).
//
// # Differences from the kernel
//
// A killed job's FreeJob runs in the goroutine that signalled its last
// dependency, where the kernel uses a work item. Close completes and frees the jobs
// still on the hardware (after CancelJob) instead of warning about them.
//
// The timeout of the head job counts from when it reached the hardware or when the
// job ahead of it finished, whichever is later: a timer per job, as the TDR is
// meant. The kernel keeps one timer per scheduler and restarts it with
// mod_delayed_work() whenever any job reaches the hardware (drm_sched_job_begin)
// or one is freed, so there a steady stream of new jobs postpones the timeout of a
// hung head; here the hang is caught one timeout after the head started.
//
// The TDR does not hand TimedOutJob a head job that has completed but is not freed
// yet; the kernel does, and leaves that check to the driver. Job.Entity stays
// valid after the job leaves its entity's queue, where the kernel clears it.
// NewJob refuses a killed entity (ErrKilled) and an entity whose schedulers are
// all closed (ErrNoRunQueue); the kernel's job init checks neither. SetPriority
// takes effect at once under every policy (see Entity.SetPriority).
package sched
