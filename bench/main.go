// Command bench measures what saferetry costs on the happy path and what
// it saves when a server is down or flaky, side by side with raw net/http,
// go-retryablehttp and failsafe-go, all on loopback httptest servers in
// this process. It prints markdown tables and ends with one line for
// scripts:
//
//	overhead_ratio=X allocs_extra=N amplification_outage=Y success_flaky=Z duplicates=D
//
// Usage:
//
//	go run . -quick              # about a minute
//	go run .                     # the full figures
//	go run . -out results.md     # also write the markdown to a file
//	go run . -cpuprofile cpu.out # profile the happy-path scenario
//	go run . -paired 31          # the happy path only, each round raw and a library back to back
//	go run . -only saferetry -n 2000  # one library alone, for valgrind --tool=callgrind
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"time"
)

// config sizes the scenarios; quick trades precision for time.
type config struct {
	quick             bool
	rounds            int // interleaved rounds of the happy path, after a warm-up round
	seqN, concN       int // requests per library per round
	callers           int
	allocN            int
	outageN           int
	createsN          int     // logical creates per flow in the create outage
	warmup            float64 // share of the outage run left out of the steady state
	flakyN            int
	flakyCallers      int
	faultRate         float64
	seed              uint64
	transfersPerFault int
}

func newConfig(quick bool) config {
	c := config{
		quick: quick, rounds: 81, seqN: 1500, concN: 3000, callers: 32, allocN: 3000,
		outageN: 20000, createsN: 5000, warmup: 0.2, flakyN: 2000, flakyCallers: 16, faultRate: 0.2, seed: 1,
		transfersPerFault: 50,
	}
	if quick {
		c.rounds, c.seqN, c.concN, c.allocN = 15, 1000, 2000, 1000
		c.outageN, c.createsN, c.flakyN, c.transfersPerFault = 5000, 1500, 400, 10
	}
	return c
}

// results holds every scenario's figures for the report.
type results struct {
	overhead  []overheadRow
	outage    []outageRow
	flaky     []flakyRow
	transfers []transferRow
	creates   []createOutageRow
	elapsed   time.Duration
}

func main() {
	quick := flag.Bool("quick", false, "smaller runs: about a minute")
	out := flag.String("out", "", "also write the markdown report to this file")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the happy-path scenario to this file")
	createsOnly := flag.Bool("creates", false, "only the create flows in an outage: requests per logical create")
	paired := flag.Int("paired", 0, "only the happy path, paired with raw net/http: this many rounds")
	only := flag.String("only", "", "send -n sequential requests with one library (raw, raw-keyed, saferetry, go-retryablehttp, go-retryablehttp-keyed) and exit: for valgrind --tool=callgrind")
	n := flag.Int("n", 2000, "requests for -only")
	memprofile := flag.String("memprofile", "", "with -only: write a profile of every allocation to this file")
	flag.Parse()
	if *only != "" {
		if *memprofile != "" {
			runtime.MemProfileRate = 1
			defer writeHeapProfile(*memprofile)
		}
		if err := runOnly(*only, *n); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		return
	}
	if *paired > 0 {
		reportPaired(os.Stdout, runPaired(*paired, 2000, 4000, 32, 2000))
		return
	}
	if *createsOnly {
		cfg := newConfig(*quick)
		reportCreateOutage(os.Stdout, cfg, runCreateOutage(cfg))
		return
	}
	if err := run(newConfig(*quick), *out, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config, out, cpuprofile string) error {
	start := time.Now()
	var r results
	var err error
	if r.overhead, err = profiled(cpuprofile, func() []overheadRow { return runOverhead(cfg) }); err != nil {
		return err
	}
	progress("happy path done")
	r.outage = runOutage(cfg)
	progress("outage done")
	r.creates = runCreateOutage(cfg)
	progress("create outage done")
	r.flaky = runFlaky(cfg)
	progress("flaky server done")
	r.transfers = runTransfers(cfg)
	r.elapsed = time.Since(start)
	var buf bytes.Buffer
	report(&buf, cfg, r)
	os.Stdout.Write(buf.Bytes())
	if out != "" {
		return os.WriteFile(out, buf.Bytes(), 0o644)
	}
	return nil
}

// profiled runs f under the CPU profiler when path is set: only the happy
// path, so the profile shows per-request cost, not backoff sleeps.
func profiled(path string, f func() []overheadRow) ([]overheadRow, error) {
	if path == "" {
		return f(), nil
	}
	file, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if err := pprof.StartCPUProfile(file); err != nil {
		return nil, err
	}
	rows := f()
	pprof.StopCPUProfile()
	return rows, nil
}

// progress goes to stderr, so stdout holds only the report.
func progress(msg string) {
	fmt.Fprintf(os.Stderr, "bench: %s\n", msg)
}

func median(xs []float64) float64 { return percentile(xs, 0.5) }

// percentile interpolates linearly between the closest ranks.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := p * float64(len(s)-1)
	lo := int(pos)
	if lo+1 >= len(s) {
		return s[lo]
	}
	return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
}
