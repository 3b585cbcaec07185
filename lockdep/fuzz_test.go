package lockdep_test

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// fuzzMaxOps bounds the annotations one input runs, to keep every input cheap.
const fuzzMaxOps = 256

// fuzzEntry is one entry of the model's held stack: a lock (an index into the
// fuzz maps) or, with m < 0, the fence signalling map of a section.
type fuzzEntry struct {
	m    int
	mode lockdep.Mode
	try  bool
}

// fuzzCookie is a cookie BeginSignalling returned, with what the model knows of it.
type fuzzCookie struct {
	ck      lockdep.Cookie
	g       int  // goroutine (0, 1, 2) that began it
	nested  bool // the section was already open
	section int  // the outermost section it belongs to
}

// fuzzGoroutine is the model of one goroutine's lockdep state.
type fuzzGoroutine struct {
	held    []fuzzEntry
	section int // open section, 0 for none
	nested  int // nested sections open inside it
}

func (g *fuzzGoroutine) fenceIndex() int {
	return slices.IndexFunc(g.held, func(e fuzzEntry) bool { return e.m < 0 })
}

// Kinds an operation on well-formed input may report: lock-order problems found on
// the way. Misuse gets exactly one report of its own kind.
var fuzzOrderKinds = []lockdep.Kind{lockdep.KindCircular, lockdep.KindRecursive, lockdep.KindSignallingDeadlock}

// FuzzAnnotationSequences decodes the input into annotations on four locks of three
// classes, run by two or three goroutines one after the other, and checks them
// against a model of what each goroutine holds: nothing panics, Held and
// InSignalling always match the model, misuse yields exactly its report, and
// nothing else yields anything but lock-order reports.
//
// The first byte picks the number of goroutines; the rest are split evenly
// between them. In each byte, the low three bits pick the operation and the high
// five its argument:
//
//	0-2  Acquire (Exclusive, Shared, RecursiveRead) of lock arg%4
//	3    TryAcquired of lock arg%4, in mode (arg/4)%3
//	4    Release of lock arg%4
//	5    BeginSignalling
//	6    EndSignalling: arg%5 == 0 a zero Cookie, else a recent cookie of any goroutine
//	7    MightWaitFence
func FuzzAnnotationSequences(f *testing.F) {
	// Locks 0 and 1 are of class FA, 2 of FB, 3 of FC. Byte op+8*arg.
	for _, seed := range [][]byte{
		{0, 0, 16, 20, 4, 16, 0, 4, 20},               // AB-BA: FA then FB; FB then FA
		{1, 0, 0, 4, 4, 4, 4},                         // recursion; releases of locks not held
		{0, 5, 16, 20, 14, 16, 7, 20, 7},              // FB taken in a section; held across a wait
		{0, 5, 5, 14, 14, 7, 7, 7, 7, 7, 7},           // a nested section ended twice
		{1, 5, 3, 11, 14, 6, 19, 2, 10, 4},            // cookies across goroutines; trylocks
		{0, 2, 2, 4, 4, 4, 10, 10, 12, 12, 12},        // recursive reads
		{0, 0, 5, 16, 7, 4, 14, 20, 7, 7, 7, 7, 7, 7}, // a wait moves the section; release below it
	} {
		f.Add(seed)
	}

	classes := []*lockdep.Class{lockdep.NewClass("FA"), lockdep.NewClass("FB"), lockdep.NewClass("FC")}
	lockClass := []int{0, 0, 1, 2} // two locks of class FA

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		c, col := lockdeptest.Collect(t, lockdep.ReportAll())
		maps := make([]*lockdep.Map, len(lockClass))
		for i, cl := range lockClass {
			maps[i] = &lockdep.Map{Class: classes[cl], Checker: c}
		}
		ngo := 2 + int(data[0]%2)
		ops := data[1:]
		if len(ops) > fuzzMaxOps {
			ops = ops[:fuzzMaxOps]
		}
		per := (len(ops) + ngo - 1) / ngo

		var cookies []fuzzCookie
		sections := 0
		for g := range ngo {
			seg := ops[min(g*per, len(ops)):min((g+1)*per, len(ops))]
			var panicked any
			var stack []byte
			runOnGoroutine(func() {
				defer func() {
					if panicked = recover(); panicked != nil {
						stack = debug.Stack()
					}
				}()
				var st fuzzGoroutine
				for i, b := range seg {
					op, arg := b&7, int(b>>3)
					before := len(col.Reports())
					var want lockdep.Kind // a misuse report the op must make, or 0
					quiet := false        // the op may report nothing at all
					switch op {
					case 0, 1, 2:
						m, mode := arg%4, lockdep.Mode(op)
						maps[m].Acquire(mode)
						st.held = append(st.held, fuzzEntry{m: m, mode: mode})
					case 3:
						m, mode := arg%4, lockdep.Mode(arg/4%3)
						maps[m].TryAcquired(mode)
						st.held = append(st.held, fuzzEntry{m: m, mode: mode, try: true})
						quiet = true
					case 4:
						m := arg % 4
						maps[m].Release()
						j := -1
						for k := len(st.held) - 1; k >= 0; k-- {
							if st.held[k].m == m {
								j = k
								break
							}
						}
						if j < 0 {
							want = lockdep.KindBadUnlock
						} else {
							st.held = slices.Delete(st.held, j, j+1)
						}
					case 5:
						rec := fuzzCookie{ck: c.BeginSignalling(), g: g}
						if st.section != 0 {
							st.nested++
							rec.nested, rec.section = true, st.section
						} else {
							sections++
							st.section, rec.section = sections, sections
							st.held = append(st.held, fuzzEntry{m: -1, mode: lockdep.Shared, try: true})
						}
						cookies = append(cookies, rec)
						quiet = true
					case 6:
						if arg%5 == 0 || len(cookies) == 0 {
							c.EndSignalling(lockdep.Cookie{})
							want = lockdep.KindBadSignalling
							break
						}
						rec := cookies[len(cookies)-1-(arg/5)%len(cookies)]
						c.EndSignalling(rec.ck)
						switch {
						case rec.g != g, st.section == 0, rec.section != st.section:
							want = lockdep.KindBadSignalling
						case rec.nested && st.nested == 0:
							want = lockdep.KindBadSignalling
						case rec.nested:
							st.nested--
							quiet = true
						case st.nested > 0:
							want = lockdep.KindBadSignalling
						default:
							j := st.fenceIndex()
							st.held = slices.Delete(st.held, j, j+1)
							st.section = 0
						}
					case 7:
						c.MightWaitFence()
						if j := st.fenceIndex(); j >= 0 {
							// The wait drops the section and takes it again, innermost.
							e := st.held[j]
							st.held = append(slices.Delete(st.held, j, j+1), e)
						}
					}

					what := fmt.Sprintf("goroutine %d, op %d (byte %#x)", g, i, b)
					var got []lockdep.Kind
					for _, r := range col.Reports()[before:] {
						got = append(got, r.Kind)
					}
					switch {
					case want != 0:
						if !assert.Equal(t, []lockdep.Kind{want}, got, what) {
							return
						}
					case quiet:
						if !assert.Empty(t, got, what) {
							return
						}
					default:
						for _, k := range got {
							if !assert.Contains(t, fuzzOrderKinds, k, what) {
								return
							}
						}
					}
					if !assert.Equal(t, st.section != 0, c.InSignalling(), what) ||
						!assert.Equal(t, fuzzHeld(st.held, maps), heldWithoutSites(c), what) {
						return
					}
				}
			})
			require.Nil(t, panicked, "goroutine %d panicked: %s", g, stack)
			if t.Failed() {
				return
			}
		}
	})
}

// heldWithoutSites returns c.Held() with the acquisition sites cleared, which the
// model does not know.
func heldWithoutSites(c *lockdep.Checker) []lockdep.LockInfo {
	held := c.Held()
	for i := range held {
		held[i].Site = runtime.Frame{}
	}
	return held
}

// fuzzHeld is what Checker.Held should return for the model's stack, sites aside.
func fuzzHeld(held []fuzzEntry, maps []*lockdep.Map) []lockdep.LockInfo {
	if len(held) == 0 {
		return nil
	}
	out := make([]lockdep.LockInfo, len(held))
	for i, e := range held {
		name := lockdep.FenceSignalling.Name()
		if e.m >= 0 {
			name = maps[e.m].Class.Name()
		}
		out[i] = lockdep.LockInfo{Class: name, Mode: e.mode, Try: e.try}
	}
	return out
}
