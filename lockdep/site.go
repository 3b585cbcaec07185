package lockdep

import (
	"runtime"
	"strings"
)

// siteDepth is how many return PCs an acquisition keeps: enough to climb out of the
// wrappers (Mutex.Lock, a ww mutex, a fence wait) to the caller a report should name.
const siteDepth = 4

// sitePCs is an acquisition site: return PCs, innermost first, zero-padded.
// Symbolised only when a report is printed, as the kernel keeps only acquire_ip.
type sitePCs [siteDepth]uintptr

// stackDepth bounds the full stacks saved for new edges and reports.
const stackDepth = 32

// captureStack records the caller's full stack; used on cold paths only (a new
// dependency edge, a report).
func captureStack(skip int) []uintptr {
	var pcs [stackDepth]uintptr
	n := runtime.Callers(skip+2, pcs[:])
	return append([]uintptr(nil), pcs[:n]...)
}

// internalPrefix names the packages whose frames a report skips when it names the
// site of an acquisition: the user wants their own call, not our wrapper.
const internalPrefix = "github.com/gpusync/gpusync/"

// isInternal reports whether f belongs to gpusync's library code (not its tests or
// examples), which reports skip when naming a site.
func isInternal(f runtime.Frame) bool {
	if strings.HasPrefix(f.Function, "runtime.") {
		return true
	}
	if !strings.HasPrefix(f.Function, internalPrefix) {
		return false
	}
	if strings.HasSuffix(f.File, "_test.go") {
		return false
	}
	rest := strings.TrimPrefix(f.Function, internalPrefix)
	return !strings.HasPrefix(rest, "examples/")
}

// frames symbolises return PCs, expanding inlined calls.
func frames(pcs []uintptr) []runtime.Frame {
	var out []runtime.Frame
	n := 0
	for n < len(pcs) && pcs[n] != 0 {
		n++
	}
	if n == 0 {
		return nil
	}
	it := runtime.CallersFrames(pcs[:n])
	for {
		f, more := it.Next()
		out = append(out, f)
		if !more {
			break
		}
	}
	return out
}

// userFrame picks the first frame outside gpusync's library code; if there is none it
// returns the outermost frame it has.
func userFrame(pcs []uintptr) runtime.Frame {
	fs := frames(pcs)
	for _, f := range fs {
		if !isInternal(f) {
			return f
		}
	}
	if len(fs) > 0 {
		return fs[len(fs)-1]
	}
	return runtime.Frame{}
}

// trimInternal drops the leading frames of the lockdep machinery, so a printed
// stack starts at the annotated primitive or its caller. If the stack is lockdep's
// own all the way down (Prime), it keeps the outermost lockdep frame.
func trimInternal(fs []runtime.Frame) []runtime.Frame {
	for i, f := range fs {
		if isLockdep(f) {
			continue
		}
		if i > 0 && strings.HasPrefix(f.Function, "runtime.") {
			return fs[i-1:]
		}
		return fs[i:]
	}
	return fs
}

func isLockdep(f runtime.Frame) bool {
	return strings.HasPrefix(f.Function, internalPrefix+"lockdep.") && !strings.HasSuffix(f.File, "_test.go")
}
