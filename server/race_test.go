//go:build race

package server

// raceEnabled is true when the race detector is on: it slows partroute several times over, so
// latency figures are logged but not checked then.
const raceEnabled = true
