package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// faultRate is the share of POSTs the fake disturbs; the others succeed,
// so most creates end after one or two posts.
const faultRate = 0.5

// faultKinds are all the faults the fake can inflict on a POST /transfers.
var faultKinds = []saferetrytest.Fault{
	saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing,
	saferetrytest.FaultSlowCommit, saferetrytest.FaultResetMidBody,
	saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
	saferetrytest.FaultUnavailable, saferetrytest.FaultRateLimited,
}

// planned is one transfer with the client_transfer_id chosen for it. The
// caller picks the id rather than letting Create generate one, so that it
// can be stored before sending and used to look the transfer up later if
// the outcome is unknown.
type planned struct {
	req    saferetry.TransferRequest
	faults *faultLog // nil against a real API
}

func planTransfers(api *target, n int, seed uint64) []planned {
	var faults *faultLog
	if api.server != nil {
		faults = injectFaults(api.server, seed)
	}
	plan := make([]planned, n)
	for i := range plan {
		plan[i] = planned{faults: faults, req: saferetry.TransferRequest{
			ClientTransferID:    fmt.Sprintf("demo-transfer-%s%03d", api.runID, i+1),
			FromParticipantCode: api.from, FromAccountGroup: api.group,
			ToParticipantCode: api.to, ToAccountGroup: api.group,
			Asset: api.asset, Amount: api.amount,
		}}
	}
	return plan
}

// faultLog records which faults the fake inflicted on each id, in order.
type faultLog struct {
	mu   sync.Mutex
	byID map[string][]saferetrytest.Fault
}

// injectFaults draws each POST's fault from the seed, the id and the
// attempt number, not from one shared stream: the goroutines reach the
// server in a different order on every run, and this way a seed still
// means the same faults for the same transfer.
func injectFaults(srv *saferetrytest.ZeroHashServer, seed uint64) *faultLog {
	log := &faultLog{byID: map[string][]saferetrytest.Fault{}}
	srv.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault {
		f := drawFault(seed, id, attempt)
		log.add(id, f)
		return f
	})
	return log
}

func drawFault(seed uint64, id string, attempt int) saferetrytest.Fault {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s#%d", id, attempt)
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	if rng.Float64() >= faultRate {
		return saferetrytest.FaultNone
	}
	return faultKinds[rng.IntN(len(faultKinds))]
}

func (l *faultLog) add(id string, f saferetrytest.Fault) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byID[id] = append(l.byID[id], f)
}

// describe is the faults one id met, e.g. "slow-commit, none".
func (l *faultLog) describe(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for _, f := range l.byID[id] {
		names = append(names, f.String())
	}
	return strings.Join(names, ", ")
}

// result is how one Create ended.
type result struct {
	id     string
	faults string // the fake's faults on its POSTs; "" against a real API
	t      *saferetry.Transfer
	err    error
}

// createAll runs the creates concurrently, as a payout batch would, each
// bounded by its own context.
func createAll(client *saferetry.Client, api *target, plan []planned) []result {
	results := make([]result, len(plan))
	var wg sync.WaitGroup
	for i, p := range plan {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), api.createTimeout)
			defer cancel()
			t, err := client.Transfers.Create(ctx, p.req)
			results[i] = result{id: p.req.ClientTransferID, t: t, err: err}
		})
	}
	wg.Wait()
	// The fault log is complete only once every create has returned.
	for i, p := range plan {
		if p.faults != nil {
			results[i].faults = p.faults.describe(results[i].id)
		}
	}
	return results
}

// printResults prints a table; the faults column only on the fake, which
// draws one fault per POST it processes (a POST answered "not an unique
// client_transfer_id" draws none).
func printResults(results []result, withFaults bool) {
	width := len("client_transfer_id")
	for _, r := range results {
		width = max(width, len(r.id))
	}
	row := func(id, faults, path, transferID string) {
		if withFaults {
			fmt.Printf("  %-*s  %-36s %-16s %s\n", width, id, faults, path, transferID)
		} else {
			fmt.Printf("  %-*s  %-16s %s\n", width, id, path, transferID)
		}
	}
	row("client_transfer_id", "faults the fake drew", "path", "zerohash id")
	for _, r := range results {
		row(r.id, r.faults, path(r), transferID(r))
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("  %s: %v\n", r.id, r.err)
		}
	}
}

// path is the way Create reached its result: Outcome for a transfer,
// "outcome unknown" when it could not learn whether the transfer exists.
func path(r result) string {
	switch {
	case r.err == nil:
		return r.t.Outcome.String()
	case errors.Is(r.err, saferetry.ErrOutcomeUnknown):
		return "outcome unknown"
	}
	return "failed"
}

func transferID(r result) string {
	if r.t == nil {
		return "-"
	}
	return fmt.Sprint(r.t.ID)
}

// printTally sums the paths, then what the client saw per attempt.
func printTally(results []result, attempts *attemptTally) {
	counts := map[string]int{}
	for _, r := range results {
		counts[path(r)]++
	}
	fmt.Println("\nPaths")
	for _, p := range []string{"created", "reposted", "recovered", "outcome unknown", "failed"} {
		fmt.Printf("  %-16s %d\n", p, counts[p])
	}
	fmt.Printf("\nAttempts the client made: %s\n", attempts)
}

// printTransfers shows what zerohash holds for each create reported done;
// against a real API there is no server count to check them against.
func printTransfers(results []result) {
	fmt.Println("\nTransfers")
	for _, r := range results {
		if r.t == nil {
			fmt.Printf("  none for %s\n", r.id)
		}
		if t := r.t; t != nil {
			fmt.Printf("  %d  %s  %s  %s/%s -> %s/%s  %s %s  created %s\n", t.ID, t.ClientTransferID, t.Status,
				t.FromParticipantCode, t.FromAccountGroup, t.ToParticipantCode, t.ToAccountGroup,
				t.Amount, t.Asset, t.CreatedAt.Format("2006-01-02 15:04:05Z07:00"))
		}
	}
}

// attemptTally counts attempts by method and result; the observer runs on
// every create's goroutine.
type attemptTally struct {
	mu     sync.Mutex
	counts map[string]int
}

func newAttemptTally() *attemptTally { return &attemptTally{counts: map[string]int{}} }

func (a *attemptTally) observe(at saferetry.Attempt) {
	result := "no answer"
	if at.StatusCode != 0 {
		result = fmt.Sprint(at.StatusCode)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[at.Method+" "+result]++
}

// String is e.g. "GET 200 x12, POST 201 x30, POST no answer x4".
func (a *attemptTally) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := slices.Sorted(maps.Keys(a.counts))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, a.counts[k])
	}
	return strings.Join(parts, ", ")
}

// checkServer asks the fake, which counts what it created, whether every
// id holds exactly one transfer and nothing else was created. After an
// unknown outcome, 0 is allowed too: the caller keeps the id and looks it
// up later.
func checkServer(srv *saferetrytest.ZeroHashServer, results []result) []error {
	fmt.Println("\nServer's own count per client_transfer_id")
	var errs []error
	var line []string
	for _, r := range results {
		n := srv.CreatedWithClientTransferID(r.id)
		line = append(line, fmt.Sprintf("%s %d", r.id, n))
		if len(line) == 4 {
			fmt.Println("  " + strings.Join(line, "   "))
			line = nil
		}
		if err := countError(r, n); err != nil {
			errs = append(errs, err)
		}
	}
	if len(line) > 0 {
		fmt.Println("  " + strings.Join(line, "   "))
	}
	total := srv.Created()
	fmt.Printf("  total created %d for %d creates\n", total, len(results))
	if len(errs) == 0 {
		fmt.Println("OK: no client_transfer_id holds more than one transfer, and every create reported done has exactly one")
	}
	return errs
}

func countError(r result, n int) error {
	switch {
	case n > 1:
		return fmt.Errorf("%s holds %d transfers, a duplicate", r.id, n)
	case n == 0 && r.err == nil:
		return fmt.Errorf("%s was reported %s (zerohash id %d) but the server holds no transfer with it", r.id, r.t.Outcome, r.t.ID)
	case n == 0 && !errors.Is(r.err, saferetry.ErrOutcomeUnknown):
		return fmt.Errorf("%s holds no transfer", r.id)
	}
	return nil
}
