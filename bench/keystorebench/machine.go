package main

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// waitQuiet waits, at most quietWait, until other processes use at most
// maxOther percent of the machine over a second.
func (b *bench) waitQuiet() {
	deadline := time.Now().Add(b.cfg.quietWait)
	for {
		c0 := readCPU()
		time.Sleep(time.Second)
		if other := otherCPU(c0, readCPU()); other <= b.cfg.maxOther || time.Now().After(deadline) {
			return
		}
	}
}

// cpuSample is the machine's busy and total CPU time (/proc/stat, in
// clock ticks) and this process's CPU time.
type cpuSample struct {
	busy, total float64 // ticks
	self        time.Duration
}

func readCPU() cpuSample {
	var c cpuSample
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return c
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseFloat(f[i], 64)
		c.total += v
		if i != 4 && i != 5 { // idle, iowait
			c.busy += v
		}
	}
	return c
}

// otherCPU returns the CPU other processes used between two samples, in
// percent of the machine (USER_HZ is 100 on Linux).
func otherCPU(a, b cpuSample) float64 {
	total := b.total - a.total
	if total <= 0 {
		return 0
	}
	other := (b.busy - a.busy) - (b.self-a.self).Seconds()*100
	return max(0, 100*other/total)
}

// loadavg returns the first three fields of /proc/loadavg.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// diskReads returns the read requests completed so far by the block
// device holding the keystore (/proc/diskstats), or -1 if unknown.
func (b *bench) diskReads() int64 {
	var st unix.Stat_t
	if unix.Stat(b.cfg.keystore, &st) != nil {
		return -1
	}
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return -1
	}
	// st.Dev is a uint64 on Linux and an int32 on Darwin.
	dev := uint64(st.Dev)
	major, minor := strconv.Itoa(int(unix.Major(dev))), strconv.Itoa(int(unix.Minor(dev)))
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line) // major minor name reads-completed ...
		if len(f) > 3 && f[0] == major && f[1] == minor {
			n, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

func dropCaches() error {
	unix.Sync()
	f, err := os.OpenFile("/proc/sys/vm/drop_caches", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("3\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rss returns the process's resident set size from /proc/self/status.
func rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heapAfterGC() runtime.MemStats {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC() // a second cycle frees what the first one's finalizers and weak pointers released
	runtime.ReadMemStats(&ms)
	return ms
}
