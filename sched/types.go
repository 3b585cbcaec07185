package sched

// Priority orders entities. Lower values are more important. Models enum
// drm_sched_priority (the order of the 6.8 and later header).
type Priority uint8

const (
	PriorityKernel Priority = iota // DRM_SCHED_PRIORITY_KERNEL
	PriorityHigh                   // DRM_SCHED_PRIORITY_HIGH
	PriorityNormal                 // DRM_SCHED_PRIORITY_NORMAL
	PriorityLow                    // DRM_SCHED_PRIORITY_LOW
	numPriorities
)

var priorityNames = [...]string{"kernel", "high", "normal", "low"}

func (p Priority) String() string {
	if p < numPriorities {
		return priorityNames[p]
	}
	return "invalid"
}

// Status is what a driver's TimedOutJob hook reports. Models enum
// drm_gpu_sched_stat.
type Status uint8

const (
	// StatusNone is reserved; never return it (DRM_GPU_SCHED_STAT_NONE). It is
	// treated as StatusReset.
	StatusNone Status = iota
	// StatusReset: the GPU hung and the driver recovered it. The timer is re-armed
	// (DRM_GPU_SCHED_STAT_RESET).
	StatusReset
	// StatusDeviceGone: the device is gone; the timer is not re-armed
	// (DRM_GPU_SCHED_STAT_ENODEV).
	StatusDeviceGone
	// StatusNoHang: a false alarm, the job is still making progress: it goes back
	// to the head of the pending list and the timer is re-armed. The driver must not
	// call Stop or Start in this case (DRM_GPU_SCHED_STAT_NO_HANG).
	StatusNoHang
)

var statusNames = [...]string{"none", "reset", "device-gone", "no-hang"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "invalid"
}

// Policy is how a scheduler picks the next entity. Models enum drm_sched_policy
// (the kernel's fair policy, and the older round robin and FIFO).
type Policy uint8

const (
	// PolicyFair is the kernel's current policy (sched_rq.c): one run queue ordered
	// by virtual GPU time, priorities as weights (kernel about 2x high, high 4x
	// normal, normal 8x low).
	PolicyFair Policy = iota
	// PolicyFIFO is the older default: strict priority, then the entity whose head
	// job was pushed first.
	PolicyFIFO
	// PolicyRoundRobin is the oldest: strict priority, then round robin.
	PolicyRoundRobin
)

var policyNames = [...]string{"fair", "fifo", "rr"}

func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return "invalid"
}
