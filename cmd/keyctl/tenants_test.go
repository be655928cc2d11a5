package main

import (
	"bytes"
	"testing"
	"time"
)

// A bar of unknown length that first renders after a while (reindex
// counting a large keystore, then learning the total) is safe under the
// race detector: with progressbar's own spinner goroutine, its unlocked
// read of the bar's start time raced with that first render, and keyctl
// reindex failed `go test -race` in CI.
func TestCountingBarRace(t *testing.T) {
	var out bytes.Buffer
	bar := countingBar(&out, "counting names")
	time.Sleep(250 * time.Millisecond) // the library's spinner ticks every 100 ms
	bar.ChangeMax(10)
	bar.Describe("indexing names")
	bar.Set(10)
	bar.Finish()
	if out.Len() == 0 {
		t.Error("the bar wrote nothing")
	}
}
