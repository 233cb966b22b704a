package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// createOutageRow is one create flow against a server that is down: how
// many requests reach it per logical create.
type createOutageRow struct {
	flow, fault string
	creates     int
	steady      float64 // requests per create after the warm-up share
	overall     float64
	unknown     int // creates that ended in ErrOutcomeUnknown (nothing was created)
	elapsed     time.Duration
}

// countingTransport counts the requests that leave for the server, by
// order of the logical create that sent them.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	by   map[int]int // create number -> requests
}

type createSeq struct{}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if seq, ok := req.Context().Value(createSeq{}).(int); ok {
		c.mu.Lock()
		c.by[seq]++
		c.mu.Unlock()
	}
	return c.base.RoundTrip(req)
}

func (c *countingTransport) requests(from, to int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for seq, r := range c.by {
		if seq >= from && seq < to {
			n += r
		}
	}
	return n
}

// runCreateOutage runs cfg.createsN Chift.Create and Transfers.Create
// against servers that answer 503 (Chift) and 502 (zerohash) to every
// create, with the SDK's defaults (retry budget on) and 1 ms waits.
func runCreateOutage(cfg config) []createOutageRow {
	return []createOutageRow{chiftOutage(cfg), transfersOutage(cfg)}
}

func chiftOutage(cfg config) createOutageRow {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultUnavailable })
	counter := &countingTransport{base: newBaseTransport(), by: map[int]int{}}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(),
		saferetry.WithHTTPClient(&http.Client{Transport: counter}), saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		panic(err) // fixed options: an error is a bug here
	}
	return createOutage(cfg, "Chift.Create", "503 to every create", counter, func(ctx context.Context, seq int) error {
		_, err := client.Chift.Create(ctx, saferetry.ChiftCreate{
			Path: "consumers/c1/invoicing/invoices", Body: map[string]any{"invoice_number": "B-" + strconv.Itoa(seq)},
			ConsumerID: "c1", ConnectionID: srv.ConnectionID,
		})
		return err
	})
}

func transfersOutage(cfg config) createOutageRow {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultBadGateway })
	counter := &countingTransport{base: newBaseTransport(), by: map[int]int{}}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithHTTPClient(&http.Client{Transport: counter}), saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		panic(err)
	}
	return createOutage(cfg, "Transfers.Create", "502 to every create", counter, func(ctx context.Context, seq int) error {
		_, err := client.Transfers.Create(ctx, saferetry.TransferRequest{
			FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
			ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01", Asset: "USD", Amount: "1.00",
		})
		return err
	})
}

// createOutage runs the creates on cfg.callers goroutines; each create's
// requests are counted under its number, so the first cfg.warmup share
// (when the budget spends its burst) can be left out of the steady state.
func createOutage(cfg config, flow, fault string, counter *countingTransport, create func(context.Context, int) error) createOutageRow {
	n := cfg.createsN
	start := time.Now()
	var next, unknown atomic.Int64
	var wg sync.WaitGroup
	for range cfg.callers {
		wg.Go(func() {
			for seq := int(next.Add(1)) - 1; seq < n; seq = int(next.Add(1)) - 1 {
				ctx := context.WithValue(context.Background(), createSeq{}, seq)
				if err := create(ctx, seq); err != nil && isUnknown(err) {
					unknown.Add(1)
				}
			}
		})
	}
	wg.Wait()
	from := int(float64(n) * cfg.warmup)
	return createOutageRow{
		flow: flow, fault: fault, creates: n,
		steady:  float64(counter.requests(from, n)) / float64(n-from),
		overall: float64(counter.requests(0, n)) / float64(n),
		unknown: int(unknown.Load()), elapsed: time.Since(start),
	}
}

func isUnknown(err error) bool {
	return errors.Is(err, saferetry.ErrOutcomeUnknown)
}

func reportCreateOutage(w io.Writer, cfg config, rows []createOutageRow) {
	fmt.Fprintf(w, "## Outage: requests per logical create\n\n"+
		"%d creates per flow on %d goroutines against a server that fails every create; the SDK's defaults "+
		"(retry budget on), 1 ms waits. A request is anything the server receives: posts, reposts, lookups. "+
		"Steady state leaves out the first %.0f %% of the creates.\n\n", cfg.createsN, cfg.callers, cfg.warmup*100)
	fmt.Fprintf(w, "| flow | server | requests per create, steady | overall | ended ErrOutcomeUnknown | time |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %.3f | %.3f | %d | %s |\n", r.flow, r.fault, r.steady, r.overall, r.unknown, r.elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
}
