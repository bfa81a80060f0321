package testkit

import (
	"bufio"
	"regexp"
	"strings"
)

// EnvoyLogAllowance is a warning, error or critical line Envoy may log in a test, and why it is
// expected.
type EnvoyLogAllowance struct {
	Line *regexp.Regexp
	Why  string
}

// envoyLogLine is Envoy's default log format, "[time][thread][level][logger] [file:line]
// message"; a message of several lines continues on lines that do not start this way.
var envoyLogLine = regexp.MustCompile(`^\[[^\]]+\]\[\d+\]\[(\w+)\]\[([^\]]*)\] (?:\[[^\]]*\] )?(.*)$`)

// UnexpectedEnvoyLogLines returns the entries of an Envoy log at warning level or above whose
// first line no entry of allowed allows, as "[level][logger] message". Lines that do not start
// an entry continue the one before; before the first entry they are output that Envoy's format
// does not explain, and count too. Envoy reports a configuration it accepts but does not apply
// as it was written (an unknown retry_on token, a deprecated field) only in its log, so tests
// that start Envoy fail on these lines.
func UnexpectedEnvoyLogLines(log string, allowed []EnvoyLogAllowance) []string {
	var bad []string
	judge := func(level, entry string) {
		switch level {
		case "warning", "error", "critical":
		default:
			return
		}
		first, _, _ := strings.Cut(entry, "\n")
		for _, a := range allowed {
			if a.Line.MatchString(first) {
				return
			}
		}
		bad = append(bad, "["+level+"]"+entry)
	}
	level, entry := "", ""
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := envoyLogLine.FindStringSubmatch(line); m != nil {
			judge(level, entry)
			level, entry = m[1], "["+m[2]+"] "+m[3]
			continue
		}
		if level == "" && strings.TrimSpace(line) != "" {
			bad = append(bad, "(unexplained output) "+line)
			continue
		}
		entry += "\n" + line
	}
	judge(level, entry)
	return bad
}
