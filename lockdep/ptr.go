package lockdep

import "unsafe"

// uintptrOf identifies a Map for de-duplicating reports about it. The value is never
// turned back into a pointer.
func uintptrOf(m *Map) uintptr { return uintptr(unsafe.Pointer(m)) }
