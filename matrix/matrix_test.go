package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The matrix runs the same logical POSTs through saferetry in every cell
// (see cells_test.go) against a fake API that misbehaves on purpose, and
// checks each operation against the server's own count: never processed
// twice, nothing lost, every error of a call that may have been sent
// matching saferetry.ErrOutcomeUnknown with the key the server saw, every
// request body closed exactly once, and no goroutine left behind once the
// suite ends.

const workersPerCell = 4

type settings struct {
	ops      int
	seed     uint64
	parallel int
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMatrix(t *testing.T) {
	s := settings{
		ops:      envInt(t, "SAFERETRY_MATRIX_OPS", 20),
		seed:     uint64(envInt(t, "SAFERETRY_MATRIX_SEED", 1)),
		parallel: envInt(t, "SAFERETRY_MATRIX_PARALLEL", 8),
	}
	var (
		mu      sync.Mutex
		tallies []*tally
		wg      sync.WaitGroup
	)
	cells := make(chan cell)
	// t.Run from several goroutines: the cells mostly wait on timers and
	// the network, so more of them run at once than -parallel's default
	// (GOMAXPROCS) would allow.
	for range s.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range cells {
				t.Run(c.String(), func(t *testing.T) {
					tl := runCell(t, c, s)
					mu.Lock()
					tallies = append(tallies, tl)
					mu.Unlock()
				})
			}
		}()
	}
	for _, c := range allCells() {
		cells <- c
	}
	close(cells)
	wg.Wait()
	reportTotals(t, tallies)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// runCell runs one cell's operations and judges them once the server has
// settled: every connection closed and every handler returned, so that no
// attempt still in flight can be processed after the count is read.
func runCell(t *testing.T, c cell, s settings) *tally {
	creds := newCredentials()
	api := newFakeAPI(c, creds, s.seed, s.ops)
	srv, err := startServer(c.proto, api)
	if err != nil {
		t.Fatalf("starting the server: %v", err)
	}
	client, err := c.client(srv, creds)
	if err != nil {
		srv.close()
		tl := &tally{cell: c, count: map[string]int{}}
		tl.add(violation{kindConfig, err.Error()})
		tl.report(t)
		return tl
	}
	ops := api.opList
	stuck := runOps(ops, client, c, srv, api)
	api.releaseHeld()
	srv.transport.CloseIdleConnections()
	srv.close()
	srv.transport.CloseIdleConnections()
	waitBodiesClosed(ops, 2*time.Second)

	tl := judge(c, api, ops, stuck)
	tl.report(t)
	return tl
}

// runOps calls every operation on workersPerCell goroutines. When no call
// has returned for a whole watchdog period it closes the server's
// connections to free the callers, and gives up on calls that still do not
// return; it reports whether it had to.
func runOps(ops []*opRecord, client *http.Client, c cell, srv *server, api *fakeAPI) (stuck bool) {
	work := make(chan *opRecord)
	finished := make(chan struct{})
	var returned atomic.Int64
	var wg sync.WaitGroup
	for range workersPerCell {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for op := range work {
				call(client, c, srv.url, op)
				returned.Add(1)
			}
		}()
	}
	go func() {
		for _, op := range ops {
			work <- op
		}
		close(work)
		wg.Wait()
		close(finished)
	}()
	for seen := int64(-1); ; {
		select {
		case <-finished:
			return false
		case <-time.After(watchdog):
		}
		if n := returned.Load(); n != seen {
			seen = n
			continue
		}
		api.releaseHeld()
		srv.abort()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
		}
		return true
	}
}

// call runs one logical operation the way a service would and records
// what it got.
func call(client *http.Client, c cell, url string, op *opRecord) {
	ctx := context.Background()
	if c.bound == ctxDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, boundTimeout)
		defer cancel()
	}
	got := result{returned: true}
	resp, err := client.Do(newRequest(ctx, c.body, url+apiPath, op))
	if err != nil {
		got.err = err
	} else {
		got.status = resp.StatusCode
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		got.readErr = err
		var named struct {
			Op string `json:"op"`
		}
		if resp.StatusCode/100 == 2 && json.Unmarshal(body, &named) == nil {
			got.answerOp = named.Op
		}
	}
	op.mu.Lock()
	op.got = got
	op.mu.Unlock()
}

// newRequest builds the operation's POST with the cell's kind of body.
func newRequest(ctx context.Context, kind bodyKind, url string, op *opRecord) *http.Request {
	var body io.Reader
	if kind == streamSmall || kind == streamLarge {
		body = op.newBody() // no GetBody: http.NewRequest does not know the type
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		panic(err) // a constant method and a URL from httptest
	}
	if kind == withGetBody {
		req.Body = op.newBody()
		req.GetBody = func() (io.ReadCloser, error) { return op.rewoundBody(), nil }
		req.ContentLength = int64(len(op.payload))
	}
	if kind != noBody {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(opHeader, op.id)
	return req
}

// waitBodiesClosed gives the transports time to close bodies from their
// own goroutines, as the RoundTripper contract allows, before the count.
func waitBodiesClosed(ops []*opRecord, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		open := false
		for _, op := range ops {
			op.mu.Lock()
			for _, b := range op.bodies {
				open = open || b.closes.Load() == 0
			}
			op.mu.Unlock()
		}
		if !open {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reportTotals(t *testing.T, tallies []*tally) {
	var all tally
	all.count = map[string]int{}
	cellsByKind, faults := map[string]int{}, map[string]int{}
	failing := 0
	for _, tl := range tallies {
		for f, n := range tl.faults {
			faults[f] += n
		}
		all.ops += tl.ops
		all.ok += tl.ok
		all.typed += tl.typed
		all.unknown += tl.unknown
		all.failed += tl.failed
		all.attempts += tl.attempts
		if len(tl.count) > 0 {
			failing++
		}
		for k, n := range tl.count {
			all.count[k] += n
			cellsByKind[k]++
		}
	}
	line := fmt.Sprintf("matrix total: cells=%d failing_cells=%d ops=%d processed_twice=%d lost=%d unknown=%d failed=%d attempts_per_op=%.2f",
		len(tallies), failing, all.ops, all.count[kindTwice], all.count[kindLost], all.unknown, all.failed, perOp(all.attempts, all.ops))
	fmt.Println(line)
	t.Log(line)
	met := fmt.Sprintf("matrix total: attempts by fault: %v", faults)
	fmt.Println(met)
	t.Log(met)
	for _, k := range allKinds {
		if n := all.count[k]; n > 0 {
			msg := fmt.Sprintf("matrix total: %s: %d operation(s) in %d cell(s)", k, n, cellsByKind[k])
			fmt.Println(msg)
			t.Log(msg)
		}
	}
}
