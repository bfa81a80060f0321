package keying

// ParseInt64 parses a strict decimal int64: an optional "-" and one or more ASCII digits,
// nothing else. It rejects "+1", " 1", "1e3", "0x10", "1_000", the empty string and values
// beyond the int64 range. Leading zeros are accepted ("007" is 7). It does not allocate.
func ParseInt64(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	neg := s[0] == '-'
	digits := s
	if neg {
		digits = s[1:]
		if digits == "" {
			return 0, false
		}
	}
	// Accumulate the magnitude as uint64 so that -9223372036854775808, whose magnitude does not
	// fit in an int64, parses.
	const maxMagnitude = uint64(1) << 63
	var u uint64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if u > maxMagnitude/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
		if u > maxMagnitude {
			return 0, false
		}
	}
	if neg {
		return int64(-u), true //nolint:gosec // u <= 2^63; -(2^63) wraps to math.MinInt64, which is what we want
	}
	if u == maxMagnitude {
		return 0, false
	}
	return int64(u), true
}
