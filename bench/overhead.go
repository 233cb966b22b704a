package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// overheadRow is one library's happy-path cost, sequential and with
// concurrent callers.
type overheadRow struct {
	name                  string
	seqNs, concNs         float64    // median ns per request over the rounds
	seqRatio, concRatio   float64    // median ÷ raw's median
	seqRounds, concRounds [3]float64 // per-round ratio to raw: 25th, 50th, 75th percentile
	allocs, bytes         float64    // per request, sequential
	concAllocs            float64    // per request, concurrent callers
}

// runOverhead measures the cost of each library on the happy path: the
// same server, the same transport settings, the libraries interleaved in
// rounds so that a noisy neighbour or a frequency change hits them all.
func runOverhead(cfg config) []overheadRow {
	srv := newOKServer()
	defer srv.Close()
	base := newBaseTransport()
	defer base.CloseIdleConnections()
	libs := []library{
		{"net/http (raw)", newRaw(base)},
		{"go-retryablehttp", newRetryable(base, waits{})},
		{"failsafe-go", newFailsafe(base, waits{})},
		{"saferetry", newSafeRetry(base, waits{})},
	}
	seq := interleave(libs, cfg.rounds, func(c *http.Client) float64 {
		return timeRequests(c, srv.URL, cfg.seqN, 1)
	})
	conc := interleave(libs, cfg.rounds, func(c *http.Client) float64 {
		return timeRequests(c, srv.URL, cfg.concN, cfg.callers)
	})
	rows := make([]overheadRow, len(libs))
	for i, lib := range libs {
		rows[i] = overheadRow{name: lib.name, seqNs: median(seq[i]), concNs: median(conc[i])}
		rows[i].seqRatio = rows[i].seqNs / median(seq[0])
		rows[i].concRatio = rows[i].concNs / median(conc[0])
		rows[i].seqRounds = roundRatios(seq[i], seq[0])
		rows[i].concRounds = roundRatios(conc[i], conc[0])
		rows[i].allocs, rows[i].bytes = allocsPerRequest(lib.client, srv.URL, cfg.allocN, 1)
		rows[i].concAllocs, _ = allocsPerRequest(lib.client, srv.URL, cfg.allocN, cfg.callers)
	}
	return rows
}

// interleave runs measure once per library per round and returns the
// results as [library][round]. The first library of a round rotates, so
// none always runs first or last; round 0 warms the pool up and is dropped.
func interleave(libs []library, rounds int, measure func(*http.Client) float64) [][]float64 {
	out := make([][]float64, len(libs))
	for r := 0; r <= rounds; r++ {
		for k := range libs {
			i := (r + k) % len(libs)
			runtime.GC() // the previous library's garbage is not this one's cost
			v := measure(libs[i].client)
			if r > 0 {
				out[i] = append(out[i], v)
			}
		}
	}
	return out
}

// roundRatios is the quartiles of the per-round ratio to raw: the ratio
// of two runs seconds apart, and how much it moves from round to round.
func roundRatios(lib, raw []float64) [3]float64 {
	ratios := make([]float64, len(lib))
	for i := range lib {
		ratios[i] = lib[i] / raw[i]
	}
	return [3]float64{percentile(ratios, 0.25), median(ratios), percentile(ratios, 0.75)}
}

// timeRequests sends n requests from callers goroutines and returns the
// wall time per request in nanoseconds.
func timeRequests(c *http.Client, url string, n, callers int) float64 {
	start := time.Now()
	sendAll(c, url, n, callers)
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// sendAll sends n requests from callers goroutines; every one must succeed,
// or the figures would measure something else than the happy path.
func sendAll(c *http.Client, url string, n, callers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if status, err := post(context.Background(), c, url, -1); err != nil || status != http.StatusOK {
					panic(fmt.Sprintf("happy path failed: status %d, %v", status, err))
				}
			}
		})
	}
	wg.Wait()
}

// allocsPerRequest counts heap allocations and bytes per request over n
// requests, the median of three runs. The in-process server's share is
// included and the same for every library: the difference to raw is the
// library's own.
func allocsPerRequest(c *http.Client, url string, n, callers int) (allocs, bytes float64) {
	var as, bs []float64
	for range 3 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sendAll(c, url, n, callers)
		runtime.ReadMemStats(&after)
		as = append(as, float64(after.Mallocs-before.Mallocs)/float64(n))
		bs = append(bs, float64(after.TotalAlloc-before.TotalAlloc)/float64(n))
	}
	return median(as), median(bs)
}
