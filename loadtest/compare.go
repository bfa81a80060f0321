package loadtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Arm is one side of a comparison: a target, and where its server's CPU time can be read.
type Arm struct {
	Name   string
	Target Target
	// ServerCPU returns the CPU time the arm's server process has used so far; nil when the
	// server has no process of its own (it runs inside the generator, or is Envoy alone).
	ServerCPU func() (time.Duration, error)
	// EnvoyCPU returns the CPU time the arm's Envoy has used so far; nil without an Envoy.
	EnvoyCPU func() (time.Duration, error)
}

// Alternate runs every arm once per round, in order, for rounds rounds: A B A B ... (A B C A B C
// with three arms). Back-to-back runs see the same machine, so drift in its state (another
// process, thermal limits, the page cache) falls on every arm alike, and the ratio of a pair
// means more than the ratio of two averages taken minutes apart. runs[i][k] is arm i's run of
// round k.
func Alternate(ctx context.Context, arms []Arm, rounds int, o Options) ([][]*Result, error) {
	if rounds < 1 {
		return nil, fmt.Errorf("a comparison needs at least one round, not %d", rounds)
	}
	runs := make([][]*Result, len(arms))
	for k := 0; k < rounds; k++ {
		for i, arm := range arms {
			ro := o
			ro.Name = arm.Name + " #" + strconv.Itoa(k+1)
			res, err := RunArm(ctx, arm, ro)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ro.Name, err)
			}
			runs[i] = append(runs[i], res)
		}
	}
	return runs, nil
}

// RunArm makes one run against arm's target and adds its server's CPU time per request.
func RunArm(ctx context.Context, arm Arm, o Options) (*Result, error) {
	server, err := startCPU(arm.ServerCPU)
	if err != nil {
		return nil, err
	}
	envoy, err := startCPU(arm.EnvoyCPU)
	if err != nil {
		return nil, err
	}
	res, err := Run(ctx, arm.Target, o)
	if err != nil {
		return nil, err
	}
	res.Target = arm.Name
	if res.ServerCPUPerRequest, err = server.perRequest(res.AllRequests); err != nil {
		return nil, err
	}
	if res.EnvoyCPUPerRequest, err = envoy.perRequest(res.AllRequests); err != nil {
		return nil, err
	}
	return res, nil
}

// cpuSpan is a process's CPU time from the start of a run.
type cpuSpan struct {
	read   func() (time.Duration, error)
	before time.Duration
}

func startCPU(read func() (time.Duration, error)) (cpuSpan, error) {
	s := cpuSpan{read: read}
	if read == nil {
		return s, nil
	}
	var err error
	s.before, err = read()
	return s, err
}

// perRequest is the CPU time used since the start, in nanoseconds per request; 0 when the
// process is not measured.
func (s cpuSpan) perRequest(requests int64) (float64, error) {
	if s.read == nil || requests <= 0 {
		return 0, nil
	}
	after, err := s.read()
	if err != nil {
		return 0, err
	}
	return float64((after - s.before).Nanoseconds()) / float64(requests), nil
}

// clockTicks is the unit of /proc/PID/stat's CPU times, USER_HZ, which is 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// ProcessCPU returns the user and system CPU time process pid has used, from /proc/PID/stat.
// Its resolution is 10 ms, which is fine for runs of seconds.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; fields count from after
	// its closing parenthesis, where field 3 (state) begins.
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[end+1:])
	// utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad CPU times", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
