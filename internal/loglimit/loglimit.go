package loglimit

import (
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Interval is the least time between two lines of one kind: a flood of thousands a second
// tells the operator no more than one line a second that counts them.
const Interval = time.Second

// MaxText is the most bytes of a client's text that a line holds.
const MaxText = 256

// Limiter lets one event through per Interval and counts the others. The zero value is
// ready; a Limiter is safe for concurrent use. Give each kind of line its own, so that a flood
// of one kind never hides a line of another.
type Limiter struct {
	last       atomic.Int64
	suppressed atomic.Int64
}

// Allow reports whether an event at now may be logged and, if so, how many events were held
// back since the last one that was.
func (l *Limiter) Allow(now time.Time) (suppressed int64, ok bool) {
	last := l.last.Load()
	if last != 0 && now.UnixNano()-last < int64(Interval) || !l.last.CompareAndSwap(last, now.UnixNano()) {
		l.suppressed.Add(1)
		return 0, false
	}
	return l.suppressed.Swap(0), true
}

// Text returns s cut to at most MaxText bytes, on a character boundary, followed by a marker
// that gives its whole length when it was cut.
func Text(s string) string {
	if len(s) <= MaxText {
		return s
	}
	n := MaxText
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "...[cut; " + strconv.Itoa(len(s)) + " bytes in all]"
}
