package lockdep

// callerPCs walks the frame-pointer chain from its caller's frame and fills pcs with
// return addresses, innermost first, stopping at a zero frame pointer. It costs a few
// loads where runtime.Callers costs about a hundred nanoseconds, which is what lets a
// checked acquisition stay cheap. The caller's own frame is skipped: pcs[0] is the
// return address into the caller's caller.
//
//go:noescape
func callerPCs(pcs *sitePCs)

// captureSite records the site of an acquisition in the caller of the function
// that calls captureSite.
//
//go:nosplit
//go:noinline
func captureSite(s *sitePCs) { callerPCs(s) }
