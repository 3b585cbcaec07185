package sched

import "time"

// tdrWorker is the timeout worker: it sleeps until the job at the head of the
// pending list has run for Timeout (counted from when it reached the hardware, or
// from when the job ahead of it finished, whichever is later), or until Fault, and
// then runs the timeout handler. Models work_tdr on timeout_wq.
//
// A deadline that moves later (the head finished, the next job's timeout starts)
// does not wake it: it wakes at the old one, finds the new one and sleeps again.
// Whoever makes the deadline earlier than the one it sleeps until (tdrAt) wakes it
// (see tdrEarlierLocked), which happens when the pending list was empty or the
// timer off: about once per burst of work, not once per job.
func (s *Scheduler) tdrWorker() error {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		s.mu.Lock()
		deadline, armed := s.tdrDeadline()
		s.tdrAt = never
		if armed {
			s.tdrAt = deadline
		}
		s.mu.Unlock()
		var fire <-chan time.Time
		if armed {
			t.Reset(time.Duration(deadline - now()))
			fire = t.C
		}
		select {
		case <-s.stop:
			t.Stop()
			return nil
		case <-s.tdrK:
			t.Stop()
		case <-fire:
			s.timedOut()
		}
	}
}

// tdrDeadline says when the timer should fire, as a clock reading. Called with mu
// held.
func (s *Scheduler) tdrDeadline() (int64, bool) {
	if s.fault {
		return now(), true
	}
	if s.tdrOff || s.cfg.Timeout <= 0 || s.pending.len() == 0 {
		return 0, false
	}
	return s.pending.front().tdrStart + int64(s.cfg.Timeout), true
}

// tdrEarlierLocked reports whether the deadline is now earlier than the one the
// TDR worker sleeps until, so that it must be woken (kick tdrK), and records it as
// the one it will sleep until. Called with mu held.
func (s *Scheduler) tdrEarlierLocked() bool {
	deadline, armed := s.tdrDeadline()
	if !armed || deadline >= s.tdrAt {
		return false
	}
	s.tdrAt = deadline
	return true
}

// Fault fires the timeout handler now, for a driver that detected a hang itself.
// Models drm_sched_fault().
func (s *Scheduler) Fault() {
	s.mu.Lock()
	s.fault = true
	s.mu.Unlock()
	kick(s.tdrK)
}

// timedOut is drm_sched_job_timedout: take the head job off the pending list (so the
// free worker cannot free it), ask the driver, and act on its answer. The timer may
// have been set for an older deadline: if the current one is still ahead, it does
// nothing, and the TDR worker sleeps again.
func (s *Scheduler) timedOut() {
	s.mu.Lock()
	if deadline, armed := s.tdrDeadline(); !armed || deadline > now() {
		s.mu.Unlock()
		return
	}
	s.fault = false
	if s.pending.len() == 0 {
		s.mu.Unlock()
		return
	}
	job := s.pending.front()
	if job.done.Load() {
		// Completed, not yet freed (the free worker is paused, or behind): no hang.
		// The kernel hands it to timedout_job and leaves the check to the driver.
		job.tdrStart = now()
		s.mu.Unlock()
		s.queueWork(workFree)
		return
	}
	s.pending.popFront()
	arms := s.tdrArms
	s.mu.Unlock()

	cookie := s.checker.BeginSignalling()
	status := s.cfg.Ops.TimedOutJob(job)
	s.checker.EndSignalling(cookie)
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventTimeout, Entity: job.entity.id, FenceContext: job.entity.schedCtx.ID(), Job: job.Seqno(), Credits: job.credits, Status: status})
	}

	s.mu.Lock()
	freeIt := s.freeGuilty
	s.freeGuilty = false
	if status == StatusNoHang {
		s.pending.pushFront(job)
	}
	if status == StatusDeviceGone {
		// Not re-armed, as drm_sched_job_timedout skips its re-arm for -ENODEV;
		// but a Start (or a job begin) inside TimedOutJob armed the timer, and
		// that stays armed, as the kernel's mod_delayed_work did.
		if s.tdrArms == arms {
			s.tdrOff = true
		}
	} else if s.pending.len() > 0 {
		s.pending.front().tdrStart = now() // re-armed for a full timeout
	}
	s.mu.Unlock()
	if freeIt {
		s.free(job)
	}
	if status == StatusNoHang {
		s.queueWork(workFree)
	}
}

// Stop stops the scheduler for a reset, from TimedOutJob: it pauses submission,
// puts bad (the job being handled) back at the head of the pending list, and
// detaches each pending job from its hardware fence, returning its credits; a job
// whose hardware fence had already signalled is freed instead (bad is kept and
// freed after TimedOutJob returns). The timer is stopped until Start. Models
// drm_sched_stop().
func (s *Scheduler) Stop(bad *Job) {
	s.WQueueStop()
	s.mu.Lock()
	if bad != nil && bad.sched == s && !s.pending.contains(bad) {
		s.pending.pushFront(bad)
	}
	jobs := s.pending.jobs()
	s.mu.Unlock()

	var keep []*Job
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		if p := j.Parent(); p != nil && p.RemoveCallback(&j.hwCb) {
			j.parent.Store(nil)
			j.detached = true
			s.credits.Add(-int64(j.credits))
			keep = append(keep, j)
			continue
		}
		if !j.done.Load() {
			keep = append(keep, j) // no hardware fence yet: Start completes it
			continue
		}
		// Done already (its callback ran): retire it now.
		if j == bad {
			s.mu.Lock()
			s.freeGuilty = true
			s.mu.Unlock()
			continue
		}
		s.free(j)
	}
	kept := make([]*Job, 0, len(keep))
	for i := len(keep) - 1; i >= 0; i-- {
		kept = append(kept, keep[i])
	}
	s.mu.Lock()
	s.pending.set(kept)
	s.tdrOff = true
	s.mu.Unlock()
	kick(s.tdrK)
}

// Start restarts the scheduler after a reset: each pending job takes its credits
// again; one with a hardware fence follows it again (completing at once, with the
// fence's error or errno, if it already signalled); one without completes with
// errno, or ErrCanceled if errno is nil. Then the timer and submission restart.
// Models drm_sched_start().
func (s *Scheduler) Start(errno error) {
	s.mu.Lock()
	jobs := s.pending.jobs()
	s.mu.Unlock()
	for _, j := range jobs {
		if j.done.Load() {
			continue
		}
		s.recharge(j)
		p := j.Parent()
		if p == nil {
			err := errno
			if err == nil {
				err = ErrCanceled
			}
			s.jobDone(j, err)
			continue
		}
		if p.AddCallbackUnbounded(&j.hwCb, hwDone) != nil {
			err := p.Error()
			if err == nil {
				err = errno
			}
			s.jobDone(j, err)
		}
	}
	s.mu.Lock()
	s.tdrOff = false
	s.tdrArms++
	if s.pending.len() > 0 {
		s.pending.front().tdrStart = now()
	}
	s.mu.Unlock()
	kick(s.tdrK)
	s.WQueueStart()
}

// recharge charges again the credits Stop gave back for j, if it did, before j
// is completed or followed again (Start, Close).
func (s *Scheduler) recharge(j *Job) {
	if j.detached {
		j.detached = false
		s.credits.Add(int64(j.credits))
	}
}

// ResubmitJobs runs every pending job again, between Stop and Start. Jobs of the
// first context whose karma exceeds the hang limit get ErrCanceled first. Deprecated
// in the kernel, because re-running a job after its fences were published breaks
// the fence rules; kept for drivers that still use it. A job whose RunJob fails
// here is left without a hardware fence, so Start completes it at once (with
// errno, or ErrCanceled, replacing RunJob's error, as drm_sched_start does),
// possibly before earlier jobs of its entity that are back on the hardware: the
// one place where one entity's finished fences may signal out of order, in the
// kernel as here. Models drm_sched_resubmit_jobs().
func (s *Scheduler) ResubmitJobs() {
	s.mu.Lock()
	jobs := s.pending.jobs()
	s.mu.Unlock()
	var guilty *Entity
	for _, j := range jobs {
		if guilty == nil && int(j.karma.Load()) > s.cfg.HangLimit {
			guilty = j.entity
		}
		if guilty != nil && j.entity == guilty {
			_ = j.finished.SetError(ErrCanceled)
			j.errSet = true
		}
		cookie := s.checker.BeginSignalling()
		hw, err := s.cfg.Ops.RunJob(j)
		s.checker.EndSignalling(cookie)
		if err != nil {
			_ = j.finished.SetError(err)
			j.errSet = true
			hw = nil
		}
		j.parent.Store(hw)
	}
}

// IncreaseKarma blames bad for a hang, unless it ran at kernel priority (kernel
// jobs are always considered good): its karma grows and, if its entity has a
// guilty flag (ShareGuilty) and is still on bad's scheduler, the flag is set, so
// that the entity's later jobs are cancelled. Models drm_sched_increase_karma(),
// which looks for the entity among the scheduler's run-queue entities: one killed
// since, or moved to another scheduler, is not found and not marked.
func (s *Scheduler) IncreaseKarma(bad *Job) {
	if bad.priority == PriorityKernel {
		return
	}
	bad.karma.Add(1)
	e := bad.entity
	if g := e.guilty.Load(); g != nil && !e.stopped.Load() && e.sched.Load() == bad.sched {
		g.Store(true)
	}
}
