//go:build race

package loadtest

// raceEnabled is set when the race detector is on: it multiplies memory use, so the memory
// bound is not checked then.
const raceEnabled = true
