// Package traceevent turns scheduler events into the Chrome trace-event JSON that
// ui.perfetto.dev and chrome://tracing open: one track per ring with a slice for
// each job's time on the hardware, one track per entity with a slice for each job's
// wait from push to run, and flow arrows from a dependency's completion to the job
// that waited for it.
//
// Plug a Recorder into any scheduler as its sched.Tracer (several schedulers may
// share one), run, then WriteTo a file.
package traceevent

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/gpusync/gpusync/sched"
)

// Process ids of the two groups of tracks.
const (
	pidRings    = 1
	pidEntities = 2
)

// A Recorder collects sched.Events. It is safe for concurrent use. The zero value is
// ready to use.
type Recorder struct {
	mu     sync.Mutex
	start  time.Time
	jobs   map[jobKey]*jobRec
	order  []jobKey
	rings  map[string]int // ring name -> tid
	ents   map[uint64]int // entity id -> tid
	names  map[uint64]string
	ctxs   map[uint64]jobKeyCtx // fence context -> entity, for dependency lookup
	deps   []dep
	faults []sched.Event
}

type jobKey struct {
	entity uint64
	seqno  uint64
}

type jobKeyCtx struct{ entity uint64 }

type jobRec struct {
	ring                 string
	credits              uint32
	queued, run, done    time.Time
	hasQ, hasRun, hasEnd bool
	err                  error
}

type dep struct {
	waiter     jobKey
	ctx, seqno uint64
	at         time.Time
}

// NameEntity gives an entity's track a name (the client), instead of its id.
func (r *Recorder) NameEntity(e *sched.Entity, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	r.names[e.ID()] = name
}

func (r *Recorder) init() {
	if r.jobs == nil {
		r.jobs = make(map[jobKey]*jobRec)
		r.rings = make(map[string]int)
		r.ents = make(map[uint64]int)
		r.names = make(map[uint64]string)
		r.ctxs = make(map[uint64]jobKeyCtx)
	}
}

// Trace records e. It implements sched.Tracer.
func (r *Recorder) Trace(e sched.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	if r.start.IsZero() || e.Time.Before(r.start) {
		r.start = e.Time
	}
	if _, ok := r.rings[e.Sched]; !ok {
		r.rings[e.Sched] = len(r.rings) + 1
	}
	if _, ok := r.ents[e.Entity]; !ok {
		r.ents[e.Entity] = len(r.ents) + 1
	}
	if e.FenceContext != 0 {
		r.ctxs[e.FenceContext] = jobKeyCtx{e.Entity}
		r.ctxs[e.FenceContext+1] = jobKeyCtx{e.Entity}
	}
	k := jobKey{e.Entity, e.Job}
	j := r.jobs[k]
	if j == nil {
		j = &jobRec{}
		r.jobs[k] = j
		r.order = append(r.order, k)
	}
	switch e.Kind {
	case sched.EventQueued:
		j.queued, j.hasQ, j.credits = e.Time, true, e.Credits
	case sched.EventRun:
		j.run, j.hasRun, j.ring = e.Time, true, e.Sched
	case sched.EventDone:
		j.done, j.hasEnd, j.err = e.Time, true, e.Err
		if j.ring == "" {
			j.ring = e.Sched
		}
	case sched.EventDependency:
		r.deps = append(r.deps, dep{waiter: k, ctx: e.DepContext, seqno: e.DepSeqno, at: e.Time})
	case sched.EventTimeout:
		r.faults = append(r.faults, e)
	}
}

// Event is one trace-event record, as the JSON format defines it. Exported for
// tests that check a trace's structure.
type Event struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`            // microseconds
	Dur  *float64       `json:"dur,omitempty"` // microseconds, for "X"
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	ID   *int           `json:"id,omitempty"` // flow id, for "s" and "f"
	Bp   string         `json:"bp,omitempty"`
	S    string         `json:"s,omitempty"` // instant scope
	Args map[string]any `json:"args,omitempty"`
}

// File is the JSON object WriteTo writes.
type File struct {
	TraceEvents     []Event `json:"traceEvents"`
	DisplayTimeUnit string  `json:"displayTimeUnit"`
}

func (r *Recorder) us(t time.Time) float64 { return float64(t.Sub(r.start).Nanoseconds()) / 1e3 }

// Events builds the trace: metadata naming the tracks, a slice per job on its ring
// and per job wait on its entity, an instant per timeout, and a flow per resolved
// dependency. Every flow start ("s") has its finish ("f") with the same id.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	var out []Event
	meta := func(pid, tid int, kind, name string) {
		out = append(out, Event{Name: kind, Ph: "M", Pid: pid, Tid: tid, Args: map[string]any{"name": name}})
	}
	meta(pidRings, 0, "process_name", "GPU rings")
	meta(pidEntities, 0, "process_name", "entities")
	for _, ring := range sortedKeys(r.rings) {
		meta(pidRings, r.rings[ring], "thread_name", ring)
	}
	for _, id := range sortedKeys(r.ents) {
		name := r.names[id]
		if name == "" {
			name = fmt.Sprintf("entity %d", id)
		}
		meta(pidEntities, r.ents[id], "thread_name", name)
	}
	for _, k := range r.order {
		j := r.jobs[k]
		name := fmt.Sprintf("%s #%d", r.entityName(k.entity), k.seqno)
		args := map[string]any{"entity": k.entity, "seqno": k.seqno, "credits": j.credits}
		if j.err != nil {
			args["error"] = j.err.Error()
		}
		if j.hasQ && j.hasRun {
			out = append(out, slice(name, "wait", pidEntities, r.ents[k.entity], r.us(j.queued), r.us(j.run), args))
		}
		if j.hasRun && j.hasEnd {
			out = append(out, slice(name, "gpu", pidRings, r.rings[j.ring], r.us(j.run), r.us(j.done), args))
		}
	}
	for _, f := range r.faults {
		out = append(out, Event{Name: "timeout", Cat: "tdr", Ph: "i", S: "t", Ts: r.us(f.Time), Pid: pidRings,
			Tid: r.rings[f.Sched], Args: map[string]any{"entity": f.Entity, "seqno": f.Job, "status": f.Status.String()}})
	}
	id := 0
	for _, d := range r.deps {
		owner, ok := r.ctxs[d.ctx]
		if !ok {
			continue // a fence no traced scheduler made
		}
		src, waiter := r.jobs[jobKey{owner.entity, d.seqno}], r.jobs[d.waiter]
		if src == nil || waiter == nil || !src.hasEnd || !waiter.hasRun || !src.hasRun {
			continue // both ends are needed for an arrow
		}
		id++
		fid := id
		out = append(out,
			Event{Name: "dependency", Cat: "dep", Ph: "s", Ts: r.us(src.done), Pid: pidRings, Tid: r.rings[src.ring], ID: &fid},
			Event{Name: "dependency", Cat: "dep", Ph: "f", Bp: "e", Ts: r.us(waiter.run), Pid: pidRings, Tid: r.rings[waiter.ring], ID: &fid})
	}
	return out
}

func (r *Recorder) entityName(id uint64) string {
	if n := r.names[id]; n != "" {
		return n
	}
	return fmt.Sprintf("entity %d", id)
}

func slice(name, cat string, pid, tid int, from, to float64, args map[string]any) Event {
	d := max(to-from, 0)
	return Event{Name: name, Cat: cat, Ph: "X", Ts: from, Dur: &d, Pid: pid, Tid: tid, Args: args}
}

func sortedKeys[K int | uint64 | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// WriteTo writes the trace as JSON.
func (r *Recorder) WriteTo(w io.Writer) (int64, error) {
	b, err := json.Marshal(File{TraceEvents: r.Events(), DisplayTimeUnit: "ns"})
	if err != nil {
		return 0, err
	}
	n, err := w.Write(append(b, '\n'))
	return int64(n), err
}
