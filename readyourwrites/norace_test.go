//go:build !race

package readyourwrites

const raceEnabled = false
