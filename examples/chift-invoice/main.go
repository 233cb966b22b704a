// Command chift-invoice creates invoices through Chift's invoicing API with
// an http.Client wrapped by saferetry, and prints what every attempt did.
//
// With no flags it starts saferetrytest's in-process fake of Chift on
// loopback and scripts one failure per invoice: a proxy's 502 HTML page, a
// 503, a 429 with Retry-After, a connection dropped before the server acted,
// one dropped after it acted, and no failure at all. It then asks the server
// how many invoices each idempotency key created and exits 1 unless every
// count is exactly 1, so the program is also a check. It needs no network
// and no environment.
//
// With -base-url it sends to that API instead (https://api.chift.eu for
// Chift). The credentials come from the environment: CHIFT_ACCESS_TOKEN (sent
// as "Authorization: Bearer <token>", never printed) and CHIFT_CONSUMER_ID.
//
//	go run ./examples/chift-invoice
//	go run ./examples/chift-invoice -n 8
//	CHIFT_ACCESS_TOKEN=... CHIFT_CONSUMER_ID=... go run ./examples/chift-invoice -base-url https://api.chift.eu -n 1
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// demoConsumerID is the consumer the in-process server books invoices for;
// the fake accepts any id.
const demoConsumerID = "00000000-0000-4000-8000-000000000001"

func main() {
	baseURL := flag.String("base-url", "", "Chift API to send to, e.g. https://api.chift.eu (default: an in-process fake)")
	n := flag.Int("n", len(scenarios), "number of invoices to create")
	flag.Parse()
	if err := run(*baseURL, *n); err != nil {
		fmt.Fprintln(os.Stderr, "chift-invoice:", err)
		os.Exit(1)
	}
}

func run(baseURL string, n int) error {
	if n < 1 {
		return fmt.Errorf("-n is %d; at least 1 invoice is needed", n)
	}
	api, err := newTarget(baseURL)
	if err != nil {
		return err
	}
	defer api.close()
	plan := planInvoices(api, n)
	client, err := newClient(api, plan)
	if err != nil {
		return err
	}
	fmt.Printf("Creating %d invoices for consumer %s at %s\n", n, api.consumerID, api.baseURL)
	outcomes := createAll(client, api, plan)
	printSummary(outcomes)
	return check(api.server, plan, outcomes)
}

// target is the API the invoices go to: the in-process fake (server set)
// or a real one reached with a bearer token.
type target struct {
	baseURL    string
	consumerID string
	token      string                     // "" for the fake, which needs none
	server     *saferetrytest.ChiftServer // nil for a real API
	// runID keeps invoice numbers and keys unique across runs against a
	// real API, where Chift remembers keys for 6 months; the fake starts
	// empty, so a fixed id keeps its trace the same on every run.
	runID string
	// attemptTimeout bounds one attempt. Chift may itself retry a rate-limited
	// connector for about 31s, so a real API gets a long bound; the fake
	// answers at once and a short bound keeps a hung attempt from stalling
	// the demo.
	attemptTimeout time.Duration
}

func newTarget(baseURL string) (*target, error) {
	if baseURL == "" {
		srv := saferetrytest.NewChiftServer()
		return &target{
			baseURL: srv.URL, consumerID: demoConsumerID, server: srv,
			runID: "demo", attemptTimeout: srv.SlowDelay + time.Second,
		}, nil
	}
	token, consumer := os.Getenv("CHIFT_ACCESS_TOKEN"), os.Getenv("CHIFT_CONSUMER_ID")
	var missing []string
	if token == "" {
		missing = append(missing, "CHIFT_ACCESS_TOKEN")
	}
	if consumer == "" {
		missing = append(missing, "CHIFT_CONSUMER_ID")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("-base-url needs %s in the environment", strings.Join(missing, " and "))
	}
	return &target{
		baseURL: strings.TrimSuffix(baseURL, "/"), consumerID: consumer, token: token,
		runID: time.Now().UTC().Format("20060102T150405"), attemptTimeout: time.Minute,
	}, nil
}

func (t *target) close() {
	if t.server != nil {
		t.server.Close()
	}
}

// newClient wraps a plain http.Client. Backoffs are short so the demo takes
// seconds; the 429's Retry-After still sets the wait when it is longer.
func newClient(api *target, plan []planned) (*http.Client, error) {
	return saferetry.Wrap(&http.Client{Timeout: 5 * time.Minute},
		saferetry.WithChift(),
		saferetry.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
		saferetry.WithAttemptTimeout(api.attemptTimeout),
		saferetry.WithObserver(printAttempt(numbersByKey(plan))),
	)
}

// check reports the failures that make the run a failed check: an invoice
// that ended in an error, a key the SDK reported differently from the one
// sent, and, against the fake, a key that did not create exactly one invoice.
func check(server *saferetrytest.ChiftServer, plan []planned, outcomes []outcome) error {
	var errs []error
	for i, o := range outcomes {
		if o.err != nil && !errors.Is(o.err, saferetry.ErrRequestAlreadyProcessed) {
			errs = append(errs, fmt.Errorf("%s failed: %w", o.number, o.err))
		}
		if o.key != plan[i].key {
			errs = append(errs, fmt.Errorf("%s: the SDK reports key %q, the request carried %q", o.number, o.key, plan[i].key))
		}
	}
	if server != nil {
		errs = append(errs, checkServer(server, plan)...)
	}
	return errors.Join(errs...)
}
