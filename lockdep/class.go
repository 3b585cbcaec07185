package lockdep

import (
	"fmt"
	"sync"
)

// A Class is a lock class: the unit lockdep reasons about. Every lock of a class is
// treated as the same node in the dependency graph, so an order learned on one
// instance applies to all of them.
//
// Models struct lock_class_key and the lock_class it names. Create a class once, at
// package level, for each kind of lock (one for every ring lock, not one per ring), as
// the kernel does with a static key. A Class is global: its dependency edges live in
// each Checker separately, so tests with isolated checkers share classes but not graphs.
type Class struct {
	name  string
	id    uint32 // index in registry.classes; never 0 for a valid class
	flags ClassFlag
	sub   uint8  // subclass number; 0 for a base class
	base  *Class // the base class of a subclass; nil for a base class

	subMu sync.Mutex
	subs  [MaxSubclasses]*Class // guarded by subMu; lazily made subclasses
}

// ClassFlag marks properties of a class that the GPU rules look at. The kernel has
// no counterpart: its lock classes carry no such marks.
type ClassFlag uint8

const (
	// MM marks a memory-management lock: one that eviction, reclaim or an MMU
	// notifier may need (dma_resv, mmap_lock, mmu_notifier, fs_reclaim). Waiting on a
	// long-running fence while holding one is reported (KindLRWaitUnderMM).
	MM ClassFlag = 1 << iota
)

// MaxSubclasses bounds Class.Subclass, as MAX_LOCKDEP_SUBCLASSES does.
const MaxSubclasses = 8

// registry hands out class ids; a Checker indexes its graph by them.
var registry struct {
	mu      sync.Mutex
	classes []*Class // classes[id]; classes[0] is nil
}

// NewClass returns a new lock class with the given name and flags. Each call makes a
// distinct class, even with a name already in use; the name is only for reports.
//
// Models a static struct lock_class_key plus lockdep_set_class_and_name().
func NewClass(name string, flags ...ClassFlag) *Class {
	c := &Class{name: name}
	for _, f := range flags {
		c.flags |= f
	}
	register(c)
	return c
}

func register(c *Class) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if len(registry.classes) == 0 {
		registry.classes = append(registry.classes, nil)
	}
	c.id = uint32(len(registry.classes))
	registry.classes = append(registry.classes, c)
}

// Subclass returns subclass n of c, a distinct graph node named "name/n". It lets
// code take two locks of one class in a fixed order (parent then child) without a
// recursion report, as mutex_lock_nested(lock, SINGLE_DEPTH_NESTING) does.
// Subclass(0) is c itself. It panics if n is outside [0, MaxSubclasses), a
// programming error the kernel also treats as a bug. Models the subclass argument
// of lock_acquire(), a separate lock_class per (key, subclass).
func (c *Class) Subclass(n int) *Class {
	if c.base != nil {
		c = c.base
	}
	if n == 0 {
		return c
	}
	if n < 0 || n >= MaxSubclasses {
		panic(fmt.Sprintf("lockdep: subclass %d out of range [0, %d)", n, MaxSubclasses))
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if s := c.subs[n]; s != nil {
		return s
	}
	s := &Class{name: fmt.Sprintf("%s/%d", c.name, n), flags: c.flags, sub: uint8(n), base: c}
	register(s)
	c.subs[n] = s
	return s
}

// Name returns the name reports print for c. Models lock_class.name.
func (c *Class) Name() string {
	if c == nil {
		return "<nil class>"
	}
	return c.name
}

// IsMM reports whether c is a memory-management class (see MM). The kernel has no
// counterpart (see ClassFlag).
func (c *Class) IsMM() bool { return c != nil && c.flags&MM != 0 }

// String returns the class name in the kernel's report notation, "(name)". Models
// print_lock_name(), without the usage bits.
func (c *Class) String() string { return "(" + c.Name() + ")" }

// The well-known classes of the kernel's memory-management and fence code. They are
// global like any class; Checker.Prime teaches a checker their canonical order.
var (
	// FenceSignalling is dma_fence_map, the pseudo-lock read-held (a non-recursive
	// read trylock) for the length of a fence signalling critical section and
	// acquired exclusively by every fence wait.
	FenceSignalling = NewClass("dma_fence_map")
	// FSReclaim is __fs_reclaim_map: held by reclaim, acquired and released by
	// every allocation that may enter reclaim.
	FSReclaim = NewClass("fs_reclaim", MM)
	// MMUNotifier is __mmu_notifier_invalidate_range_start_map: held while an MMU
	// notifier invalidates a range (and so may wait on dma fences).
	MMUNotifier = NewClass("mmu_notifier_invalidate_range_start", MM)
	// MmapLock is the mm's mmap_lock (an rwsem).
	MmapLock = NewClass("&mm->mmap_lock", MM)
	// IMmap is a file mapping's i_mmap_rwsem, taken by shrinkers that unmap
	// buffer objects.
	IMmap = NewClass("&mapping->i_mmap_rwsem", MM)
	// ReservationAcquire is the acquire context class of reservation_ww_class
	// ("reservation_ww_class_acquire").
	ReservationAcquire = NewClass("reservation_ww_class_acquire")
	// Reservation is the ww_mutex class of every dma_resv
	// ("reservation_ww_class_mutex").
	Reservation = NewClass("reservation_ww_class_mutex", MM)
)
