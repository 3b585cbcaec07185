package lr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/resv"
)

// vmLockClass is the class of every VM's lock (xe_vm's vm->lock). It is held while
// waiting on preempt fences, so the preempt worker, which signals them, must never
// take it; lockdep checks that.
var vmLockClass = lockdep.NewClass("lr.vm.lock")

// VMOps are the driver's hooks for a VM: the buffer validation that Xe's
// preempt_rebind_work_func() does (xe_vm_validate_rebind(), xe_bo_validate()).
type VMOps struct {
	// Revalidate makes an evicted buffer resident again before the queues resume.
	// It runs in the rebind worker with every reservation locked.
	Revalidate func(bo *resv.Object) error
}

// A VM is an address space in long-running mode: its LR queues run with its
// buffers mapped, and each queue has a preempt fence in every reservation object
// of the VM (its own and each external buffer's), with Bookkeep usage. Models the LR
// part of Xe's struct xe_vm: the preempt fences, the ordered preempt worker and the
// rebind worker.
//
// A VM owns two goroutines, the preempt worker and the rebind worker, stopped and
// joined by Close. The preempt worker is the VM's own, where Xe has one ordered
// preempt_fence_wq per device: there a slow suspension (or one retried with
// -EAGAIN) on one VM holds up every VM's preempt fences behind it; here VMs
// proceed independently, which keeps a model of one VM self-contained.
type VM struct {
	Resv    *resv.Object
	ops     VMOps
	checker *lockdep.Checker
	lock    lockdep.Mutex // vm->lock: the rebind worker holds it while waiting on preempt fences

	mu      sync.Mutex
	bos     []*resv.Object // external buffers
	queues  []*queueState
	evicted map[*resv.Object]bool
	closed  bool
	killed  error // why the rebind worker killed the VM (xe_vm_kill), or nil

	// The ordered preempt_fence_wq: fences whose work is queued, oldest first,
	// and a wake-up for the worker. Queueing never blocks (queue_work does not):
	// it runs from EnableSignaling, with the fence's lock held.
	preemptMu sync.Mutex
	preemptQ  []*PreemptFence // under preemptMu
	preemptK  chan struct{}

	rebindK chan struct{}
	stop    context.CancelFunc // ends the workers' context
	wg      sync.WaitGroup
	rebinds int // completed rebinds, for tests and stats (under mu)
}

// queueState is one LR queue's membership in a VM: its preempt fence context and
// the current fence.
type queueState struct {
	q   *Queue
	ctx *fence.Context
	seq uint64
	pf  *PreemptFence
}

// NewVM makes a VM with its own reservation object and starts its workers.
// Models xe_vm_create() with XE_VM_FLAG_LR_MODE.
func NewVM(ops VMOps, checker *lockdep.Checker) *VM {
	vm := &VM{
		Resv:     resv.NewObject(checker),
		ops:      ops,
		checker:  checker,
		evicted:  make(map[*resv.Object]bool),
		preemptK: make(chan struct{}, 1),
		rebindK:  make(chan struct{}, 1),
	}
	vm.lock = lockdep.Mutex{Class: vmLockClass, Checker: checker}
	// One context for the workers' lifetime: Close cancels it, which both stops
	// them and interrupts a suspension wait or a rebind in progress.
	ctx, cancel := context.WithCancel(context.Background())
	vm.stop = cancel
	vm.wg.Go(func() { vm.preemptWorker(ctx) })
	vm.wg.Go(func() { vm.rebindWorker(ctx) })
	return vm
}

func (vm *VM) queueState(q *Queue) *queueState {
	for _, st := range vm.queues {
		if st.q == q {
			return st
		}
	}
	return nil
}

// objects returns the VM's reservation and its external buffers.
func (vm *VM) objects() []*resv.Object {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]*resv.Object{vm.Resv}, vm.bos...)
}

// AddBuffer binds an external buffer to the VM: every LR queue's current preempt
// fence is added to it with Bookkeep usage. A call that gives up (ctx ends while
// bo is locked by someone else) changes nothing: bo is bound only once the
// fences are in it. A closed VM returns ErrClosed. Binding a buffer that is
// already bound, or the VM's own reservation object, does nothing: the VM lists
// an external object once however many times it is mapped, as
// drm_gpuvm_bo_extobj_add() does, and a buffer sharing the VM's reservation is
// not external at all. Models binding an external buffer object to a VM in LR
// mode, as Xe's VM_BIND does with xe_vm_lock_dma_resv() and the preempt fences'
// reinstall.
func (vm *VM) AddBuffer(ctx context.Context, bo *resv.Object) error {
	vm.lock.Lock() // no queue joins and no rebind swaps fences until bo is bound
	defer vm.lock.Unlock()
	vm.mu.Lock()
	if err := vm.usable(); err != nil {
		vm.mu.Unlock()
		return err
	}
	if bo == vm.Resv || slices.Contains(vm.bos, bo) {
		vm.mu.Unlock()
		return nil
	}
	var fences []*fence.Fence
	for _, st := range vm.queues {
		fences = append(fences, st.pf.Fence)
	}
	vm.mu.Unlock()
	if err := addBookkeep(ctx, bo, fences); err != nil {
		return err
	}
	vm.mu.Lock()
	vm.bos = append(vm.bos, bo)
	vm.mu.Unlock()
	return nil
}

// addBookkeep locks bo and adds fences to it with Bookkeep usage, all or none:
// the slots are reserved before the first fence goes in.
func addBookkeep(ctx context.Context, bo *resv.Object, fences []*fence.Fence) error {
	if len(fences) == 0 {
		return nil
	}
	if err := bo.Lock(ctx, nil); err != nil {
		return err
	}
	defer bo.Unlock()
	if err := bo.Reserve(len(fences)); err != nil {
		return err
	}
	for _, f := range fences {
		if err := bo.AddFence(f, resv.Bookkeep); err != nil {
			return err
		}
	}
	return nil
}

// AddQueue attaches an LR queue: it gets its first preempt fence in every
// reservation object of the VM. Every object is locked, and a slot reserved in
// each, before the queue joins, so a call that gives up (ctx ends while an
// object is locked by someone else) changes nothing. A queue already attached is
// left as it is (Xe's uAPI cannot attach one twice). Models
// xe_vm_add_compute_exec_queue().
func (vm *VM) AddQueue(ctx context.Context, q *Queue) error {
	vm.lock.Lock()
	defer vm.lock.Unlock()
	vm.mu.Lock()
	err := vm.usable()
	attached := vm.queueState(q) != nil
	vm.mu.Unlock()
	if err != nil || attached {
		return err // a queue joins once (vm.lock keeps it from joining meanwhile)
	}
	objs := vm.objects()
	e := resv.NewExec(resv.IgnoreDuplicates, vm.checker)
	defer e.Fini()
	if err := e.Run(ctx, func(ctx context.Context) error {
		return e.PrepareAll(ctx, objs, 1)
	}); err != nil {
		return err
	}
	vm.mu.Lock()
	if err := vm.usable(); err != nil {
		vm.mu.Unlock()
		return err
	}
	st := &queueState{q: q, ctx: fence.NewContext("lr", "preempt", fence.WithOps(preemptOps), fence.WithChecker(vm.checker))}
	vm.queues = append(vm.queues, st)
	st.pf = vm.newPreemptFence(q)
	pf := st.pf
	// A preemption already in flight (another queue's fence triggered, its rebind
	// not done) means buffers may be moving: the new queue must stop too, so its
	// fence is triggered at once, as xe_vm_add_compute_exec_queue() does.
	inFlight := false
	for _, other := range vm.queues {
		// Triggered and not yet replaced by the rebind worker: suspending, or
		// suspended while buffers move. A banned queue's fence stays triggered.
		if other != st && other.pf.Triggered() && other.q.Err() == nil {
			inFlight = true
		}
	}
	vm.mu.Unlock()
	for _, bo := range objs {
		// Cannot fail: bo is locked and its slot reserved, and a preempt fence is
		// an ordinary fence.
		if err := bo.AddFence(pf.Fence, resv.Bookkeep); err != nil {
			panic(fmt.Sprintf("lr: adding a preempt fence to a reserved object: %v", err))
		}
	}
	e.Fini() // before triggering: the preempt path locks nothing here, but waiters may
	if inFlight {
		pf.EnableSignaling()
	}
	return nil
}

// usable says why the VM takes no new buffers or queues: ErrClosed, or
// ErrBanned once it was killed. Call with mu held.
func (vm *VM) usable() error {
	switch {
	case vm.closed:
		return ErrClosed
	case vm.killed != nil:
		return fmt.Errorf("%w: %w", ErrBanned, vm.killed)
	}
	return nil
}

// Err returns why the VM was killed, or nil. The rebind worker kills a VM when a
// preempt fence timed out (ErrTimedOut) or the rebind itself failed; every queue
// on it is then banned with that error. Models XE_VM_FLAG_BANNED.
func (vm *VM) Err() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.killed
}

// PreemptFence returns q's current preempt fence in this VM, or nil.
func (vm *VM) PreemptFence(q *Queue) *PreemptFence {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if st := vm.queueState(q); st != nil {
		return st.pf
	}
	return nil
}

// Rebinds returns how many times the rebind worker resumed the VM's queues.
func (vm *VM) Rebinds() int {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.rebinds
}

// queuePreempt queues pf's work on the preempt worker, at the back, without
// blocking. Models queue_work() on the ordered preempt_fence_wq.
func (vm *VM) queuePreempt(pf *PreemptFence) {
	vm.preemptMu.Lock()
	vm.preemptQ = append(vm.preemptQ, pf)
	vm.preemptMu.Unlock()
	select {
	case vm.preemptK <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// nextPreempt takes the oldest queued fence, or returns nil.
func (vm *VM) nextPreempt() *PreemptFence {
	vm.preemptMu.Lock()
	defer vm.preemptMu.Unlock()
	if len(vm.preemptQ) == 0 {
		return nil
	}
	pf := vm.preemptQ[0]
	vm.preemptQ[0] = nil
	vm.preemptQ = vm.preemptQ[1:]
	return pf
}

// preemptWorker signals preempt fences once their queue is suspended, one at a
// time, in order: the VM's ordered preempt_fence_wq (see VM). Everything runs inside a
// fence signalling section, so lockdep reports it if this path ever takes the VM
// lock (held by waiters of these fences) or allocates. A SuspendWait that returns
// ErrAgain is retried later, from the back of the queue. A failed suspension only
// gives the fence its error: the worker bans nothing (that would wait for the
// queue's scheduler inside the signalling section); the rebind worker decides
// what the error means. Models preempt_fence_work_func().
func (vm *VM) preemptWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-vm.preemptK:
			for pf := vm.nextPreempt(); pf != nil && ctx.Err() == nil; pf = vm.nextPreempt() {
				vm.signalPreempt(ctx, pf)
			}
		}
	}
}

func (vm *VM) signalPreempt(ctx context.Context, pf *PreemptFence) {
	chk := vm.checker
	if chk == nil {
		chk = lockdep.Default
	}
	cookie := chk.BeginSignalling()
	defer chk.EndSignalling(cookie)
	pf.mu.Lock()
	err := pf.suspendErr
	pf.mu.Unlock()
	q := pf.q
	switch {
	case err != nil:
	case q.Err() != nil:
		err = ErrQueueReset
	case q.cfg.Ops.SuspendWait != nil:
		err = q.cfg.Ops.SuspendWait(ctx, q)
		if errors.Is(err, ErrAgain) {
			vm.queuePreempt(pf) // retried behind the work queued meanwhile
			return
		}
	}
	if err != nil && ctx.Err() != nil {
		return // the VM is closing: Close signals the fence and bans the queue
	}
	if err != nil {
		_ = pf.SetError(err)
	}
	_ = pf.Signal()
	select {
	case vm.rebindK <- struct{}{}:
	default:
	}
}

// Evict moves bo out of memory, as TTM eviction under memory pressure does: lock
// it, wait for every fence including Bookkeep ones (which preempts the LR queues
// using it: their preempt fences start the suspension when waited on), move it,
// and unlock. The rebind worker then revalidates it and resumes the queues. Models
// ttm_bo_evict() on a buffer shared with LR queues.
func (vm *VM) Evict(ctx context.Context, bo *resv.Object) error {
	if err := bo.Lock(ctx, nil); err != nil {
		return err
	}
	defer bo.Unlock()
	if err := bo.Wait(ctx, resv.Bookkeep); err != nil {
		return err
	}
	vm.mu.Lock()
	vm.evicted[bo] = true
	vm.mu.Unlock()
	return nil
}

// IsEvicted reports whether bo was evicted and not yet revalidated.
func (vm *VM) IsEvicted(bo *resv.Object) bool {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.evicted[bo]
}

// rebindWorker resumes the VM's queues after a preemption: with the VM lock held,
// lock every reservation object, wait for every live queue's preempt fence (which
// preempts the queues that were not yet: all of them are then off the hardware),
// revalidate evicted buffers, reserve slots, arm one new preempt fence per queue,
// resume the queues, and install the new fences with Bookkeep usage. A preempt
// fence that timed out (ErrTimedOut), or a rebind that fails, kills the VM; any
// other preempt fence error is only the fence's, and its queue is resumed with
// the others ("Only -ETIME on fence indicates VM needs to be killed",
// wait_for_existing_preempt_fences()). Models preempt_rebind_work_func().
func (vm *VM) rebindWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-vm.rebindK:
			if err := vm.rebind(ctx); err != nil && !errors.Is(err, context.Canceled) {
				vm.kill(err)
			}
		}
	}
}

// isTimeout reports whether a preempt fence's error is the kernel's -ETIME.
func isTimeout(err error) bool {
	return errors.Is(err, ErrTimedOut) || errors.Is(err, context.DeadlineExceeded)
}

func (vm *VM) rebind(ctx context.Context) error {
	vm.lock.Lock()
	defer vm.lock.Unlock()

	vm.mu.Lock()
	if vm.killed != nil {
		vm.mu.Unlock()
		return nil // a killed VM is never rebound
	}
	// Every live queue: a banned one has left the VM's list of LR queues, as
	// Xe's kill removes it (xe_vm_remove_compute_exec_queue()). Its fence is
	// signalled, or signals with ErrQueueReset once triggered.
	var states []*queueState
	pending := false
	for _, st := range vm.queues {
		if st.q.Err() == nil {
			states = append(states, st)
			pending = pending || st.pf.Triggered()
		}
	}
	vm.mu.Unlock()
	if !pending {
		return nil // no preemption pending: nothing to do (preempt_fences_waiting())
	}
	objs := vm.objects()
	e := resv.NewExec(resv.IgnoreDuplicates, vm.checker)
	defer e.Fini()
	err := e.Run(ctx, func(ctx context.Context) error {
		return e.PrepareAll(ctx, objs, len(states))
	})
	if err != nil {
		return err
	}
	// Waiting triggers the fences not yet triggered: one queue's preemption
	// preempts all of them, since the buffers they share may move. Models
	// wait_for_existing_preempt_fences().
	for _, st := range states {
		if err := st.pf.Wait(ctx); err != nil {
			return err
		}
		if err := st.pf.Error(); isTimeout(err) {
			return fmt.Errorf("lr: preempt fence of %s: %w", st.q.Name(), err)
		}
	}
	// A queue banned meanwhile (a hardware fault; a reset queue's fence carries
	// ErrQueueReset) is not resumed, and if no queue is left the evicted buffers
	// stay evicted, as when nothing was preempted. Decided after the waits, as the
	// ban may come while the worker waits.
	states = slices.DeleteFunc(states, func(st *queueState) bool { return st.q.Err() != nil })
	if len(states) == 0 {
		return nil
	}
	vm.mu.Lock()
	var evicted []*resv.Object
	for bo := range vm.evicted {
		evicted = append(evicted, bo)
	}
	vm.mu.Unlock()
	for _, bo := range evicted {
		if vm.ops.Revalidate != nil {
			if err := vm.ops.Revalidate(bo); err != nil {
				return err
			}
		}
		vm.mu.Lock()
		delete(vm.evicted, bo)
		vm.mu.Unlock()
	}
	// Point of no return: arm the new fences, resume, publish.
	vm.mu.Lock()
	fresh := make([]*PreemptFence, len(states))
	for i, st := range states {
		if st.q.Err() != nil {
			continue
		}
		st.pf = vm.newPreemptFence(st.q)
		fresh[i] = st.pf
	}
	vm.rebinds++
	vm.mu.Unlock()
	for i, st := range states {
		pf := fresh[i]
		if pf == nil {
			continue
		}
		if r := st.q.cfg.Ops.Resume; r != nil {
			r(st.q)
		}
		for _, bo := range objs {
			if err := bo.AddFence(pf.Fence, resv.Bookkeep); err != nil {
				return err
			}
		}
	}
	return nil
}

// kill bans the VM and every queue on it after a failed rebind: queues already
// banned keep their first error. The VM takes no new queues or buffers
// afterwards, and its rebind worker does nothing more. Models xe_vm_kill().
func (vm *VM) kill(err error) {
	err = fmt.Errorf("lr: VM killed: %w", err)
	vm.mu.Lock()
	if vm.killed == nil {
		vm.killed = err
	}
	states := append([]*queueState(nil), vm.queues...)
	vm.mu.Unlock()
	for _, st := range states {
		st.q.Fail(err)
	}
}

// Close stops the VM's workers and waits for them. Queues are closed by their
// owners, but every queue still attached is banned with ErrClosed (unless it was
// banned already): without the rebind worker a queue that is preempted now, or
// was preempted and not yet resumed, would never run again while still taking
// pushes. A preempt fence still pending is signalled with ErrClosed: nobody else
// would signal it, and external buffers outlive the VM, so a later eviction would
// wait for it forever; the ban is what makes that signal true, since a banned
// queue never runs again. Models xe_vm_close_and_put(); Xe refuses to destroy a
// VM that still has LR queues (-EBUSY), where Close bans them.
func (vm *VM) Close() {
	vm.mu.Lock()
	if vm.closed {
		vm.mu.Unlock()
		return
	}
	vm.closed = true
	vm.mu.Unlock()
	vm.stop()
	vm.wg.Wait()
	vm.mu.Lock()
	states := append([]*queueState(nil), vm.queues...)
	vm.mu.Unlock()
	for _, st := range states {
		if st.q.Err() == nil {
			st.q.Fail(ErrClosed)
		}
		if !st.pf.IsSignaled() {
			_ = st.pf.SetError(ErrClosed)
			_ = st.pf.Signal()
		}
	}
}
