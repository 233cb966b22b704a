package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// pairedRow is one library against raw net/http on the happy path, each
// round a pair of runs back to back.
type pairedRow struct {
	name, mode       string
	wall, cpu        [3]float64 // per-round ratio to raw: median, min, max
	rawNs, libNs     float64    // median wall ns per request
	rawCPU, libCPU   float64    // median CPU ns per request (user + system)
	allocs, bytes    float64    // per request, above raw
	rounds, requests int
}

// cpuNow is the process's user + system CPU time, from its own accounting.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measured is one run: wall and CPU time per request.
type measured struct{ wall, cpu float64 }

func measure(c *http.Client, url string, n, callers int) measured {
	runtime.GC() // the other run's garbage is not this one's cost
	cpu0, start := cpuNow(), time.Now()
	sendAll(c, url, n, callers)
	return measured{
		wall: float64(time.Since(start).Nanoseconds()) / float64(n),
		cpu:  float64((cpuNow() - cpu0).Nanoseconds()) / float64(n),
	}
}

// runPaired measures each library against raw net/http: per round, raw
// and the library back to back, which goes first alternating; the ratio
// of the pair is the round's figure. The median over the rounds is the
// result, with the minimum and maximum to show the spread.
func runPaired(rounds, seqN, concN, callers, allocN int) []pairedRow {
	srv := newOKServer()
	defer srv.Close()
	base := newBaseTransport()
	defer base.CloseIdleConnections()
	raw := newRaw(base)
	libs := []library{
		{"saferetry", newSafeRetry(base, waits{})},
		{"raw + key by hand", newRawKeyed(base)},
		{"go-retryablehttp", newRetryable(base, waits{})},
		{"go-retryablehttp + key by hand", newRetryableKeyed(base)},
	}
	var rows []pairedRow
	for _, mode := range []struct {
		name       string
		n, callers int
	}{{"sequential", seqN, 1}, {fmt.Sprintf("%d callers", callers), concN, callers}} {
		for _, lib := range libs {
			sendAll(raw, srv.URL, mode.n, mode.callers) // warm both up
			sendAll(lib.client, srv.URL, mode.n, mode.callers)
			var wall, cpu, rawW, libW, rawC, libC []float64
			for r := range rounds {
				var a, b measured
				if r%2 == 0 {
					a = measure(raw, srv.URL, mode.n, mode.callers)
					b = measure(lib.client, srv.URL, mode.n, mode.callers)
				} else {
					b = measure(lib.client, srv.URL, mode.n, mode.callers)
					a = measure(raw, srv.URL, mode.n, mode.callers)
				}
				wall, cpu = append(wall, b.wall/a.wall), append(cpu, b.cpu/a.cpu)
				rawW, libW, rawC, libC = append(rawW, a.wall), append(libW, b.wall), append(rawC, a.cpu), append(libC, b.cpu)
			}
			row := pairedRow{name: lib.name, mode: mode.name, rounds: rounds, requests: mode.n,
				wall: spread(wall), cpu: spread(cpu),
				rawNs: median(rawW), libNs: median(libW), rawCPU: median(rawC), libCPU: median(libC)}
			if mode.callers == 1 {
				ra, rb := allocsPerRequest(raw, srv.URL, allocN, 1)
				la, lb := allocsPerRequest(lib.client, srv.URL, allocN, 1)
				row.allocs, row.bytes = la-ra, lb-rb
			}
			rows = append(rows, row)
		}
	}
	return rows
}

func spread(xs []float64) [3]float64 {
	return [3]float64{median(xs), percentile(xs, 0), percentile(xs, 1)}
}

func reportPaired(w io.Writer, rows []pairedRow) {
	fmt.Fprintln(w, "## Happy path, paired with raw net/http")
	fmt.Fprintln(w)
	if len(rows) > 0 {
		fmt.Fprintf(w, "1 KiB JSON POST over loopback, keep-alive. %d rounds; each round runs raw net/http and the library back to back, alternating which goes first, and records their ratio: the median of the rounds, [minimum–maximum]. Wall: time per request; CPU: the process's user + system time per request (getrusage; the in-process server's share included, the same for both). Allocations and bytes per request above raw, sequential.\n\n", rows[0].rounds)
	}
	fmt.Fprintln(w, "| library | callers | requests per run | wall × raw | CPU × raw | raw µs/req | library µs/req | Δ allocs/req | Δ B/req |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		allocs, bytes := "", ""
		if r.mode == "sequential" {
			allocs, bytes = fmt.Sprintf("%+.1f", r.allocs), fmt.Sprintf("%+.0f", r.bytes)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.3f [%.3f–%.3f] | %.3f [%.3f–%.3f] | %.1f | %.1f | %s | %s |\n",
			r.name, r.mode, r.requests, r.wall[0], r.wall[1], r.wall[2], r.cpu[0], r.cpu[1], r.cpu[2],
			r.rawNs/1e3, r.libNs/1e3, allocs, bytes)
	}
}

// writeHeapProfile writes the allocations profile to path.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		panic(err)
	}
}

// runOnly sends n sequential requests with one library and nothing else:
// the program to count instructions of under valgrind --tool=callgrind.
func runOnly(name string, n int) error {
	srv := newOKServer()
	defer srv.Close()
	base := newBaseTransport()
	defer base.CloseIdleConnections()
	var c *http.Client
	switch name {
	case "raw":
		c = newRaw(base)
	case "raw-keyed":
		c = newRawKeyed(base)
	case "saferetry":
		c = newSafeRetry(base, waits{})
	case "go-retryablehttp":
		c = newRetryable(base, waits{})
	case "go-retryablehttp-keyed":
		c = newRetryableKeyed(base)
	default:
		return fmt.Errorf("-only %q: want raw, raw-keyed, saferetry, go-retryablehttp or go-retryablehttp-keyed", name)
	}
	sendAll(c, srv.URL, n, 1)
	return nil
}

// keyByHand is raw net/http with the key header set on each request as a
// caller would do it by hand (a UUIDv4 in Idempotency-Key): the server
// parses one more header and net/http writes one more. It sets the header
// on the request it is given, which the benchmark's own requests allow.
type keyByHand struct{ base http.RoundTripper }

func (k keyByHand) RoundTrip(req *http.Request) (*http.Response, error) {
	req.Header.Set("Idempotency-Key", uuid.NewString())
	return k.base.RoundTrip(req)
}

func newRawKeyed(base http.RoundTripper) *http.Client {
	return &http.Client{Transport: keyByHand{base}}
}

// newRetryableKeyed is go-retryablehttp with the key set by hand once per
// logical request, above its retries, which then resend it unchanged.
func newRetryableKeyed(base http.RoundTripper) *http.Client {
	return &http.Client{Transport: keyByHand{newRetryable(base, waits{}).Transport}}
}
