package keying_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/partroute/partroute/keying"
)

func TestParseInt64Accepts(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"-0", 0},
		{"42", 42},
		{"-42", -42},
		{"007", 7},
		{"-007", -7},
		{"000000000000000000000000000042", 42},
		{"-9223372036854775808", -9223372036854775808},
		{"9223372036854775807", 9223372036854775807},
		{"-9223372036854775807", -9223372036854775807},
		{"9223372036854775806", 9223372036854775806},
		{"922337203685477580", 922337203685477580},
		{"0009223372036854775807", 9223372036854775807},
		{"9007199254740993", 9007199254740993},
	}
	for _, tt := range tests {
		got, ok := keying.ParseInt64(tt.in)
		if !ok || got != tt.want {
			t.Errorf("ParseInt64(%q) = %d, %v; want %d, true", tt.in, got, ok, tt.want)
		}
		// strconv is the reference for every input it accepts.
		ref, err := strconv.ParseInt(tt.in, 10, 64)
		if err != nil || ref != got {
			t.Errorf("strconv.ParseInt(%q) = %d, %v; ParseInt64 says %d", tt.in, ref, err, got)
		}
	}
}

func TestParseInt64Rejects(t *testing.T) {
	for _, in := range []string{
		"+1",
		"+0",
		" 1",
		"1 ",
		"\t1",
		"1\n",
		"1e3",
		"0x10",
		"0b1",
		"0o7",
		"1_000",
		"",
		"-",
		"--1",
		"-+1",
		"1-",
		"9223372036854775808",
		"-9223372036854775809",
		"18446744073709551615",
		"18446744073709551616",
		"99999999999999999999",
		"-99999999999999999999",
		"92233720368547758070",
		"1.0",
		"1,000",
		"١", // ARABIC-INDIC DIGIT ONE
		"４２",
		"4\x002",
		"NaN",
		"Inf",
	} {
		if got, ok := keying.ParseInt64(in); ok {
			t.Errorf("ParseInt64(%q) = %d, true; want false", in, got)
		}
	}
}

func FuzzParseInt64(f *testing.F) {
	for _, seed := range []string{
		"0", "-0", "42", "007", "-9223372036854775808", "9223372036854775807",
		"9223372036854775808", "-9223372036854775809", "+1", " 1", "1e3", "0x10", "1_000", "", "-",
		"99999999999999999999", "١", "--1", "00000000000000000000000000001",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := keying.ParseInt64(s)
		ref, err := strconv.ParseInt(s, 10, 64)
		if ok {
			if err != nil || ref != got {
				t.Fatalf("ParseInt64(%q) = %d, true; strconv.ParseInt says %d, %v", s, got, ref, err)
			}
			if strings.ContainsRune(s, '+') {
				t.Fatalf("ParseInt64(%q) accepted a +", s)
			}
			return
		}
		if err == nil && strings.Trim(s, "-0123456789") == "" {
			t.Fatalf("ParseInt64(%q) rejected what strconv.ParseInt reads as %d", s, ref)
		}
	})
}
