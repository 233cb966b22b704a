package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// report writes the markdown tables, the goals, and the final line for
// scripts.
func report(w io.Writer, cfg config, r results) {
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "# saferetry benchmark (%s run, %s)\n\n", mode, r.elapsed.Round(time.Second))
	fmt.Fprintf(w, "%s %s/%s, %d CPUs, GOMAXPROCS %d; %s\n\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0), versions())
	reportOverhead(w, cfg, r.overhead)
	reportOutage(w, cfg, r.outage)
	reportCreateOutage(w, cfg, r.creates)
	reportFlaky(w, cfg, r.flaky)
	reportTransfers(w, r.transfers)
	reportGoals(w, r)
	raw, sr := r.overhead[0], r.overhead[len(r.overhead)-1]
	fmt.Fprintf(w, "overhead_ratio=%.3f allocs_extra=%d amplification_outage=%.3f creates_outage_chift=%.3f creates_outage_zerohash=%.3f success_flaky=%.4f duplicates=%d\n",
		sr.seqRatio, int(math.Round(sr.allocs-raw.allocs)), saferetryOutage(r.outage).steady,
		r.creates[0].steady, r.creates[1].steady, saferetryFlaky(r.flaky).success, saferetryFlaky(r.flaky).duplicates)
}

// versions names the library versions this binary was built with.
func versions() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var parts []string
	for _, m := range info.Deps {
		switch m.Path {
		case "github.com/hashicorp/go-retryablehttp", "github.com/failsafe-go/failsafe-go":
			parts = append(parts, m.Path[strings.LastIndex(m.Path, "/")+1:]+" "+m.Version)
		}
	}
	return strings.Join(parts, ", ")
}

func reportOverhead(w io.Writer, cfg config, rows []overheadRow) {
	fmt.Fprintf(w, "## Happy path: 1 KiB JSON POST, keep-alive, loopback\n\n")
	fmt.Fprintf(w, "Median of %d interleaved rounds (%d sequential requests, %d requests from %d callers, per library per round); "+
		"× raw is the ratio of the medians; per round, the median [25th–75th percentile] of the ratio to raw within each round. "+
		"Allocations include the in-process server's share, the same for every library.\n\n",
		cfg.rounds, cfg.seqN, cfg.concN, cfg.callers)
	fmt.Fprintf(w, "| library | sequential ns/req | × raw | per round | %d callers ns/req | × raw | per round | allocs/req | Δ allocs | B/req | × raw | allocs/req (%d callers) |\n",
		cfg.callers, cfg.callers)
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	raw := rows[0]
	for _, o := range rows {
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %s | %.0f | %.3f | %s | %.1f | %+.1f | %.0f | %.2f | %.1f |\n",
			o.name, o.seqNs, o.seqRatio, quartiles(o.seqRounds), o.concNs, o.concRatio, quartiles(o.concRounds),
			o.allocs, o.allocs-raw.allocs, o.bytes, o.bytes/raw.bytes, o.concAllocs)
	}
	fmt.Fprintln(w)
}

func reportOutage(w io.Writer, cfg config, rows []outageRow) {
	fmt.Fprintf(w, "## Outage: every answer is 503\n\n")
	fmt.Fprintf(w, "%d logical POSTs from %d callers, waits set to 1 ms, retry counts and policies the libraries' defaults. "+
		"Steady state leaves out the first %.0f %% of the logical requests.\n\n", cfg.outageN, cfg.callers, cfg.warmup*100)
	fmt.Fprintf(w, "| library | configuration | attempts per logical request (steady) | (whole run) | attempts at the server | time |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|\n")
	for _, o := range rows {
		fmt.Fprintf(w, "| %s | %s | %.3f | %.3f | %d | %s |\n", o.name, o.config, o.steady, o.overall, o.attempts, o.elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
}

func reportFlaky(w io.Writer, cfg config, rows []flakyRow) {
	fmt.Fprintf(w, "## Flaky server: %.0f %% of attempts dropped (half after processing, half before)\n\n", cfg.faultRate*100)
	fmt.Fprintf(w, "%d logical POSTs from %d callers, seed %d; the server deduplicates on Idempotency-Key and replays the stored answer. "+
		"Default waits and retry counts. Latencies are per logical request with all callers sharing 2 cores: "+
		"callers asleep in a backoff leave the CPU to the others, so compare p50s with care.\n\n", cfg.flakyN, cfg.flakyCallers, cfg.seed)
	fmt.Fprintf(w, "| library | configuration | success | duplicates | 2xx but nothing created | attempts per logical request | p50 | p99 | time |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, o := range rows {
		fmt.Fprintf(w, "| %s | %s | %.2f %% | %d | %d | %.3f | %s | %s | %s |\n", o.name, o.config, o.success*100, o.duplicates,
			o.lost, o.attempts, roundLatency(o.p50), roundLatency(o.p99), o.elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
}

func reportTransfers(w io.Writer, rows []transferRow) {
	fmt.Fprintf(w, "## Ambiguous transfers: saferetry Transfers.Create on the zerohash fake\n\n")
	fmt.Fprintf(w, "The first POST /transfers of every create fails as shown; extra requests are the server's request count minus the one POST. The retry budget is off: with every create's first POST failing it would read the run as an outage and refuse the lookups and reposts, which the outage tables measure.\n\n")
	fmt.Fprintf(w, "| first POST ended in | creates | extra requests per create | recovered | reposted | exactly once | errors |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|\n")
	for _, o := range rows {
		fmt.Fprintf(w, "| %s | %d | %.2f | %d | %d | %d/%d | %d |\n", o.fault, o.creates, o.extra, o.recovered, o.reposts,
			o.exactlyOnce, o.creates, o.errors)
	}
	fmt.Fprintln(w)
}

// reportGoals checks the figures against the goals.
func reportGoals(w io.Writer, r results) {
	raw, rh, sr := r.overhead[0], findOverhead(r.overhead, "go-retryablehttp"), r.overhead[len(r.overhead)-1]
	out, fl := saferetryOutage(r.outage), saferetryFlaky(r.flaky)
	fmt.Fprintf(w, "## Goals\n\n| goal | target | measured | met |\n|---|---|---|---|\n")
	goal := func(name, target, measured string, met bool) {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, target, measured, yesNo(met))
	}
	goal("happy-path time, sequential", "≤ 1.05 × raw", fmt.Sprintf("%.3f ×", sr.seqRatio), sr.seqRatio <= 1.05)
	goal("happy-path time, concurrent", "≤ 1.05 × raw", fmt.Sprintf("%.3f ×", sr.concRatio), sr.concRatio <= 1.05)
	goal("allocations", "≤ raw + 20 per request", fmt.Sprintf("%+.1f", sr.allocs-raw.allocs), sr.allocs-raw.allocs <= 20)
	goal("not slower than go-retryablehttp", "saferetry ≤ retryablehttp",
		fmt.Sprintf("%.0f vs %.0f ns sequential, %.0f vs %.0f ns concurrent", sr.seqNs, rh.seqNs, sr.concNs, rh.concNs),
		sr.seqNs <= rh.seqNs && sr.concNs <= rh.concNs)
	goal("amplification under outage", "≤ 1.3 attempts per request", fmt.Sprintf("%.3f", out.steady), out.steady <= 1.3)
	for _, c := range r.creates {
		goal("outage, "+c.flow, "≤ 1.3 requests per logical create", fmt.Sprintf("%.3f", c.steady), c.steady <= 1.3)
	}
	goal("flaky server success", "≥ 99.9 %", fmt.Sprintf("%.2f %%", fl.success*100), fl.success >= 0.999)
	goal("flaky server duplicates", "0", fmt.Sprint(fl.duplicates), fl.duplicates == 0)
	fmt.Fprintln(w)
}

func quartiles(q [3]float64) string {
	return fmt.Sprintf("%.3f [%.3f–%.3f]", q[1], q[0], q[2])
}

func findOverhead(rows []overheadRow, name string) overheadRow {
	for _, o := range rows {
		if o.name == name {
			return o
		}
	}
	return overheadRow{}
}

// saferetryOutage is saferetry with its defaults, budget on.
func saferetryOutage(rows []outageRow) outageRow {
	for _, o := range rows {
		if o.name == "saferetry" && strings.HasPrefix(o.config, "defaults") {
			return o
		}
	}
	return outageRow{}
}

func saferetryFlaky(rows []flakyRow) flakyRow {
	for _, o := range rows {
		if o.name == "saferetry" {
			return o
		}
	}
	return flakyRow{}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func roundLatency(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}
