package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyedge/keyedge/internal/excerpt"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat times.
var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100 // USER_HZ on every Linux architecture Go supports
})

// ClockTicks is the number of /proc/PID/stat clock ticks per second, as
// `getconf CLK_TCK` reports it (100 when getconf is missing).
func ClockTicks() int64 { return clockTicks() }

// ProcessCPU returns the CPU time (user + system, the process's own
// threads, not its children) that process pid has used so far, read from
// /proc/PID/stat. Its resolution is one clock tick, usually 10 ms.
func ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: cpu time of pid %d: %w", pid, err)
	}
	utime, stime, err := parseStat(data)
	if err != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	ticks := int64(utime + stime)
	hz := ClockTicks()
	return time.Duration(ticks/hz)*time.Second + time.Duration(ticks%hz)*time.Second/time.Duration(hz), nil
}

// parseStat returns fields 14 and 15 (utime, stime, in clock ticks) of a
// /proc/PID/stat line. Field 2, the command name in parentheses, may hold
// spaces and parentheses itself, so fields are counted from the last ')'.
func parseStat(data []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("no command name in %q", excerpt.Of(string(data), 64))
	}
	// After ") " come field 3 (state) onwards: utime is field 14, the
	// 12th of them.
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	if utime, err = strconv.ParseUint(fields[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if stime, err = strconv.ParseUint(fields[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return utime, stime, nil
}

// cpuSnapshot is the CPU time of several processes at one moment.
type cpuSnapshot map[int]time.Duration

func snapshotCPU(pids []int) (cpuSnapshot, error) {
	s := make(cpuSnapshot, len(pids))
	for _, pid := range pids {
		d, err := ProcessCPU(pid)
		if err != nil {
			return nil, err
		}
		s[pid] = d
	}
	return s, nil
}

// since returns the CPU time each process used between s and now, and
// their sum.
func (s cpuSnapshot) since(now cpuSnapshot) (map[int]float64, float64) {
	per := make(map[int]float64, len(s))
	var total float64
	for pid, before := range s {
		d := (now[pid] - before).Seconds()
		per[pid] = d
		total += d
	}
	return per, total
}

// CPUBusy is how busy one CPU was during a run, from /proc/stat: the
// share of its time not idle (user, system, interrupts, softirq, steal,
// ...), and the softirq share alone (loopback networking is mostly
// softirq, charged to no process).
type CPUBusy struct {
	CPU     string  `json:"cpu"`
	Busy    float64 `json:"busy"`
	Softirq float64 `json:"softirq"`
}

// cpuTimes are one CPU's /proc/stat counters: user nice system idle
// iowait irq softirq steal (guest time is already in user).
type cpuTimes [8]uint64

// readCPUTimes reads the per-CPU lines of /proc/stat ("cpu0", "cpu1", …).
func readCPUTimes() (map[string]cpuTimes, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUTimes(data)
}

func parseCPUTimes(data []byte) (map[string]cpuTimes, error) {
	m := make(map[string]cpuTimes)
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var t cpuTimes
		for i := range t {
			v, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/stat %s: %w", f[0], err)
			}
			t[i] = v
		}
		m[f[0]] = t
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("/proc/stat: no per-CPU lines")
	}
	return m, nil
}

// cpuBusy compares two readCPUTimes results.
func cpuBusy(before, after map[string]cpuTimes) []CPUBusy {
	var out []CPUBusy
	for name, a := range after {
		b, ok := before[name]
		if !ok {
			continue
		}
		var total uint64
		for i := range a {
			total += a[i] - b[i]
		}
		if total == 0 {
			continue
		}
		idle := (a[3] - b[3]) + (a[4] - b[4])
		out = append(out, CPUBusy{
			CPU:     name,
			Busy:    1 - float64(idle)/float64(total),
			Softirq: float64(a[6]-b[6]) / float64(total),
		})
	}
	slices.SortFunc(out, func(x, y CPUBusy) int {
		return cmp.Or(cmp.Compare(len(x.CPU), len(y.CPU)), cmp.Compare(x.CPU, y.CPU))
	})
	return out
}

// MachineLoad measures for how long how many CPUs are busy, in cores
// (1.0: one CPU kept busy), over the interval.
func MachineLoad(ctx context.Context, interval time.Duration) (float64, error) {
	before, err := readCPUTimes()
	if err != nil {
		return 0, err
	}
	select {
	case <-time.After(interval):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	after, err := readCPUTimes()
	if err != nil {
		return 0, err
	}
	var cores float64
	for _, c := range cpuBusy(before, after) {
		cores += c.Busy
	}
	return cores, nil
}

// WaitQuiet waits, up to timeout, until the machine's load measured over
// a second is at most maxCores. It returns the last load measured and
// whether it was low enough.
func WaitQuiet(ctx context.Context, maxCores float64, timeout time.Duration) (float64, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		load, err := MachineLoad(ctx, time.Second)
		if err != nil {
			return 0, false, err
		}
		if load <= maxCores {
			return load, true, nil
		}
		if time.Now().After(deadline) {
			return load, false, nil
		}
	}
}
