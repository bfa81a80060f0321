//go:build race

package resolver_test

// raceEnabled is true when the race detector is on; it instruments memory accesses and may
// allocate, so allocation counts are not checked then.
const raceEnabled = true
