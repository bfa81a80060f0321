//go:build !race

package servicefabric

const raceEnabled = false
