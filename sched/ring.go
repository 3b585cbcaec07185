package sched

// jobRing is a FIFO of jobs in a circular buffer that doubles when full: the
// scheduler's pending list (the kernel's pending_list, a list_head through each
// job) without an allocation per job. The zero value is an empty ring.
type jobRing struct {
	buf  []*Job // len is zero or a power of two
	head int    // index of the oldest job
	n    int    // jobs held
}

func (r *jobRing) len() int { return r.n }

// at returns the i-th job, oldest first.
func (r *jobRing) at(i int) *Job { return r.buf[(r.head+i)&(len(r.buf)-1)] }

// front returns the oldest job, or nil.
func (r *jobRing) front() *Job {
	if r.n == 0 {
		return nil
	}
	return r.buf[r.head]
}

func (r *jobRing) grow() {
	if r.n < len(r.buf) {
		return
	}
	buf := make([]*Job, max(2*len(r.buf), 16))
	for i := range r.n {
		buf[i] = r.at(i)
	}
	r.buf, r.head = buf, 0
}

func (r *jobRing) pushBack(j *Job) {
	r.grow()
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = j
	r.n++
}

func (r *jobRing) pushFront(j *Job) {
	r.grow()
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = j
	r.n++
}

// popFront removes and returns the oldest job; the ring must not be empty.
func (r *jobRing) popFront() *Job {
	j := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return j
}

// jobs returns a copy of the jobs, oldest first.
func (r *jobRing) jobs() []*Job {
	out := make([]*Job, r.n)
	for i := range out {
		out[i] = r.at(i)
	}
	return out
}

func (r *jobRing) contains(j *Job) bool {
	for i := range r.n {
		if r.at(i) == j {
			return true
		}
	}
	return false
}

// set replaces the contents with js, oldest first.
func (r *jobRing) set(js []*Job) {
	for r.n > 0 {
		r.popFront()
	}
	for _, j := range js {
		r.pushBack(j)
	}
}
