package main

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type flakyRow struct {
	name, config string
	success      float64 // share of logical requests that got a 2xx
	duplicates   int     // entities beyond one per logical request
	lost         int     // logical requests that got a 2xx and created nothing
	attempts     float64 // server attempts per logical request
	p50, p99     time.Duration
	elapsed      time.Duration
}

// runFlaky sends cfg.flakyN logical POSTs to a server that fails
// cfg.faultRate of the attempts, each library configured as its docs show
// for a POST, with its default waits.
func runFlaky(cfg config) []flakyRow {
	variants := []struct {
		name, config string
		client       func(http.RoundTripper) *http.Client
	}{
		{"net/http (raw)", "no retries", newRaw},
		{"go-retryablehttp", "defaults (retries POST on errors, no key)", func(b http.RoundTripper) *http.Client { return newRetryable(b, waits{}) }},
		{"failsafe-go", "NewRetryPolicyBuilder() (retries errors, no key)", func(b http.RoundTripper) *http.Client { return newFailsafe(b, waits{}) }},
		{"saferetry", "defaults (Idempotency-Key)", func(b http.RoundTripper) *http.Client { return newSafeRetry(b, waits{}) }},
	}
	rows := make([]flakyRow, len(variants))
	for i, v := range variants {
		rows[i] = flakyOnce(cfg, v.client)
		rows[i].name, rows[i].config = v.name, v.config
	}
	return rows
}

// flakyOnce runs one library against a fresh server (same seed: the same
// faults strike the same attempts) and a fresh transport.
func flakyOnce(cfg config, newClient func(http.RoundTripper) *http.Client) flakyRow {
	srv := newFlakyServer(cfg.seed, cfg.faultRate)
	defer srv.Close()
	base := newBaseTransport()
	defer base.CloseIdleConnections()
	c := newClient(base)
	n := cfg.flakyN
	latencies := make([]time.Duration, n)
	ok := make([]bool, n)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range cfg.flakyCallers {
		wg.Go(func() {
			for seq := int(next.Add(1)) - 1; seq < n; seq = int(next.Add(1)) - 1 {
				t0 := time.Now()
				status, err := post(context.Background(), c, srv.URL, seq)
				latencies[seq] = time.Since(t0)
				ok[seq] = err == nil && status >= 200 && status < 300
			}
		})
	}
	wg.Wait()
	return flakyResult(srv, ok, latencies, time.Since(start))
}

func flakyResult(srv *flakyServer, ok []bool, latencies []time.Duration, elapsed time.Duration) flakyRow {
	n := len(ok)
	row := flakyRow{elapsed: elapsed}
	_, row.duplicates = srv.created()
	srv.mu.Lock()
	for seq, good := range ok {
		if good {
			row.success++
			if srv.entities[seq] == 0 {
				row.lost++
			}
		}
	}
	srv.mu.Unlock()
	row.success /= float64(n)
	row.attempts = float64(srv.counter.attempts(0, n)) / float64(n)
	slices.Sort(latencies)
	row.p50, row.p99 = latencies[n/2], latencies[min(n-1, n*99/100)]
	return row
}
