package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// outageWait replaces every library's backoff bounds in the outage, so
// the run takes seconds; the number of retries is each library's default.
var outageWait = waits{min: time.Millisecond, max: time.Millisecond}

type outageRow struct {
	name, config string
	steady       float64 // attempts per logical request after the warm-up share
	overall      float64
	attempts     int
	elapsed      time.Duration
}

// runOutage sends cfg.outageN logical requests to a server that answers
// 503 to everything and counts what reaches it.
func runOutage(cfg config) []outageRow {
	variants := []struct {
		name, config string
		client       func(http.RoundTripper) *http.Client
	}{
		{"net/http (raw)", "no retries", newRaw},
		{"go-retryablehttp", "defaults: 4 retries", func(b http.RoundTripper) *http.Client { return newRetryable(b, outageWait) }},
		{"failsafe-go", "defaults: 2 retries", func(b http.RoundTripper) *http.Client { return newFailsafe(b, outageWait) }},
		{"saferetry", "defaults: 3 retries, retry budget", func(b http.RoundTripper) *http.Client { return newSafeRetry(b, outageWait) }},
		{"saferetry", "WithoutRetryBudget()", func(b http.RoundTripper) *http.Client {
			return newSafeRetry(b, outageWait, saferetry.WithoutRetryBudget())
		}},
	}
	rows := make([]outageRow, len(variants))
	for i, v := range variants {
		rows[i] = outageOnce(cfg, v.client)
		rows[i].name, rows[i].config = v.name, v.config
	}
	return rows
}

// outageOnce runs one library against a fresh server and transport. The
// first cfg.warmup share of the logical requests is left out of the steady
// state: it is when a retry budget spends its initial burst.
func outageOnce(cfg config, newClient func(http.RoundTripper) *http.Client) outageRow {
	srv := newOutageServer()
	defer srv.Close()
	base := newBaseTransport()
	defer base.CloseIdleConnections()
	c := newClient(base)
	n := cfg.outageN
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range cfg.callers {
		wg.Go(func() {
			for seq := int(next.Add(1)) - 1; seq < n; seq = int(next.Add(1)) - 1 {
				post(context.Background(), c, srv.URL, seq) // every answer is a failure: only the count matters
			}
		})
	}
	wg.Wait()
	from := int(float64(n) * cfg.warmup)
	all := srv.counter.attempts(0, n)
	return outageRow{
		steady:   float64(srv.counter.attempts(from, n)) / float64(n-from),
		overall:  float64(all) / float64(n),
		attempts: all,
		elapsed:  time.Since(start),
	}
}
