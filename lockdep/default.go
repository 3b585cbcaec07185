package lockdep

// The functions below annotate through Default, as the kernel's free functions do
// through its one lockdep. Code that takes a Checker should call the methods of the
// same names instead.

// BeginSignalling calls Default.BeginSignalling.
func BeginSignalling() Cookie { return Default.BeginSignalling() }

// EndSignalling calls Default.EndSignalling.
func EndSignalling(c Cookie) { Default.EndSignalling(c) }

// MightWaitFence calls Default.MightWaitFence.
func MightWaitFence() { Default.MightWaitFence() }

// MightReclaim calls Default.MightReclaim.
func MightReclaim() { Default.MightReclaim() }

// BeginReclaim calls Default.BeginReclaim.
func BeginReclaim() { Default.BeginReclaim() }

// EndReclaim calls Default.EndReclaim.
func EndReclaim() { Default.EndReclaim() }

// BeginMMUNotifier calls Default.BeginMMUNotifier.
func BeginMMUNotifier() { Default.BeginMMUNotifier() }

// EndMMUNotifier calls Default.EndMMUNotifier.
func EndMMUNotifier() { Default.EndMMUNotifier() }

// MightWaitLongRunning calls Default.MightWaitLongRunning.
func MightWaitLongRunning(what string) { Default.MightWaitLongRunning(what) }

// Prime calls Default.Prime.
func Prime() { Default.Prime() }
