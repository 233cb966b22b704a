// Command transfers creates zerohash transfers with Transfers.Create, which
// follows zerohash's recipe for a failed or timed-out POST /transfers: look
// the client_transfer_id up first, and post again with the same id only if
// nothing is there. It prints the path each transfer took.
//
// With no flags it starts saferetrytest's in-process fake of zerohash on
// loopback and lets it inflict seeded random faults on about half of the
// POSTs: connections dropped before and after the transfer is created,
// commits slower than the attempt timeout, answers cut mid-body, 500, 502,
// 503 and 429. It creates the transfers concurrently, then asks the server
// how many transfers each client_transfer_id holds and exits 1 unless every
// count is exactly 1, so the program is also a check. A create that ends
// with an unknown outcome is allowed (its id may then hold 0 or 1
// transfers) but is counted and printed. It needs no network and no
// environment, and -seed replays the same faults.
//
// With -base-url it sends to that API instead (https://api.cert.zerohash.com
// for zerohash's certification environment) and reads the credentials and
// the accounts from the environment: ZEROHASH_API_KEY, ZEROHASH_API_SECRET
// (base64), ZEROHASH_PASSPHRASE, ZEROHASH_FROM_PARTICIPANT,
// ZEROHASH_TO_PARTICIPANT, ZEROHASH_ACCOUNT_GROUP, and optionally
// ZEROHASH_ASSET (default USD) and ZEROHASH_AMOUNT (default 0.01). The
// secrets are never printed.
//
//	go run ./examples/transfers
//	go run ./examples/transfers -n 200 -seed 7
//	ZEROHASH_API_KEY=... ZEROHASH_API_SECRET=... ... go run ./examples/transfers -base-url https://api.cert.zerohash.com
package main

import (
	"context"
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

// Defaults of -n: a real API moves real (if test) money, so one transfer.
const (
	demoTransfers = 40
	realTransfers = 1
)

func main() {
	baseURL := flag.String("base-url", "", "zerohash API to send to, e.g. https://api.cert.zerohash.com (default: an in-process fake)")
	n := flag.Int("n", 0, fmt.Sprintf("number of transfers to create (default %d, or %d with -base-url)", demoTransfers, realTransfers))
	seed := flag.Uint64("seed", 1, "seed of the fake's random faults")
	flag.Parse()
	if err := run(*baseURL, *n, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "transfers:", err)
		os.Exit(1)
	}
}

func run(baseURL string, n int, seed uint64) error {
	api, err := newTarget(baseURL)
	if err != nil {
		return err
	}
	defer api.close()
	if n == 0 {
		n = api.defaultCount
	}
	if n < 1 {
		return fmt.Errorf("-n is %d; at least 1 transfer is needed", n)
	}
	plan := planTransfers(api, n, seed)
	attempts := newAttemptTally()
	client, err := newClient(api, attempts)
	if err != nil {
		return err
	}
	if err := syncClock(client, api); err != nil {
		return err
	}
	fmt.Printf("Creating %d transfer(s) at %s\n\n", n, api.baseURL)
	results := createAll(client, api, plan)
	printResults(results, api.server != nil)
	printTally(results, attempts)
	if api.server == nil {
		printTransfers(results)
	}
	return check(api, results)
}

// target is the API the transfers go to: the in-process fake (server set)
// or a real one.
type target struct {
	baseURL                    string
	apiKey, secret, passphrase string
	from, to, group            string // participant codes and account group
	asset, amount              string
	server                     *saferetrytest.ZeroHashServer // nil for a real API
	defaultCount               int
	// runID keeps client_transfer_ids unique across runs against a real
	// API, where an id stays taken for 72 hours; the fake starts empty, so
	// fixed ids keep its report the same on every run.
	runID string
	// attemptTimeout bounds one attempt, createTimeout one whole Create. On
	// the fake an attempt times out just before a slow commit ends, so those
	// creates go through the lookup and the repost.
	attemptTimeout, createTimeout time.Duration
}

func newTarget(baseURL string) (*target, error) {
	if baseURL == "" {
		return newFakeTarget(), nil
	}
	return newRealTarget(baseURL)
}

func newFakeTarget() *target {
	srv := saferetrytest.NewZeroHashServer()
	const attemptTimeout = 400 * time.Millisecond
	srv.SlowDelay = attemptTimeout + 200*time.Millisecond
	// A 429 asks for 1 s: without Retry-After, Create waits zerohash's
	// documented 10 s lock-out, and a few of those would outlast the demo's
	// 15 s per create.
	srv.RetryAfterSeconds = 1
	return &target{
		baseURL: srv.URL, apiKey: srv.APIKey, secret: srv.Secret, passphrase: srv.Passphrase,
		from: "DEMO01", to: "CUST01", group: "00SCXM", asset: "USD", amount: "20.10",
		server: srv, defaultCount: demoTransfers, runID: "",
		attemptTimeout: attemptTimeout, createTimeout: 15 * time.Second,
	}
}

func newRealTarget(baseURL string) (*target, error) {
	env := map[string]string{}
	var missing []string
	for _, name := range []string{
		"ZEROHASH_API_KEY", "ZEROHASH_API_SECRET", "ZEROHASH_PASSPHRASE",
		"ZEROHASH_FROM_PARTICIPANT", "ZEROHASH_TO_PARTICIPANT", "ZEROHASH_ACCOUNT_GROUP",
	} {
		env[name] = os.Getenv(name)
		if strings.TrimSpace(env[name]) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("-base-url needs these variables in the environment: %s", strings.Join(missing, ", "))
	}
	return &target{
		baseURL: strings.TrimSuffix(baseURL, "/"),
		apiKey:  env["ZEROHASH_API_KEY"], secret: env["ZEROHASH_API_SECRET"], passphrase: env["ZEROHASH_PASSPHRASE"],
		from: env["ZEROHASH_FROM_PARTICIPANT"], to: env["ZEROHASH_TO_PARTICIPANT"], group: env["ZEROHASH_ACCOUNT_GROUP"],
		asset: envOr("ZEROHASH_ASSET", "USD"), amount: envOr("ZEROHASH_AMOUNT", "0.01"),
		defaultCount: realTransfers, runID: runStamp(),
		attemptTimeout: 30 * time.Second, createTimeout: 3 * time.Minute,
	}, nil
}

// runStamp is the current time to the millisecond: two runs in one second
// must not share ids, or the second would find the first's transfer and
// report it recovered instead of creating its own.
func runStamp() string {
	return strings.Replace(time.Now().UTC().Format("20060102T150405.000"), ".", "", 1) + "-"
}

func envOr(name, fallback string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return fallback
}

func (t *target) close() {
	if t.server != nil {
		t.server.Close()
	}
}

// newClient signs every attempt for zerohash. Backoffs are short so the
// demo takes seconds; the observer only counts attempts, because printed
// as they happen the lines of 40 concurrent creates would interleave.
func newClient(api *target, attempts *attemptTally) (*saferetry.Client, error) {
	return saferetry.NewClient(api.baseURL,
		saferetry.WithHTTPClient(&http.Client{Timeout: 5 * time.Minute}),
		saferetry.WithZeroHashAuth(api.apiKey, api.secret, api.passphrase),
		saferetry.WithAttemptTimeout(api.attemptTimeout),
		saferetry.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		saferetry.WithObserver(attempts.observe),
	)
}

// syncClock corrects the signatures' timestamps by zerohash's clock: a
// host more than 60 s off would have every request refused. The fake runs
// on this host's clock, so it needs none.
func syncClock(client *saferetry.Client, api *target) error {
	if api.server != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offset, err := client.SyncZeroHashClock(ctx)
	if err != nil {
		return fmt.Errorf("reading zerohash's clock: %w", err)
	}
	// GET /time counts whole seconds, so the offset is only that precise.
	fmt.Printf("Signing with zerohash's clock: %v from this host's\n", offset.Round(time.Second))
	return nil
}

// check reports what makes the run a failed check: a create that failed
// for any reason but an unknown outcome and, against the fake, an id that
// does not hold exactly one transfer (or, after an unknown outcome, more
// than one).
func check(api *target, results []result) error {
	var errs []error
	for _, r := range results {
		if r.err != nil && !errors.Is(r.err, saferetry.ErrOutcomeUnknown) {
			errs = append(errs, fmt.Errorf("%s failed: %w", r.id, r.err))
		}
	}
	if api.server != nil {
		errs = append(errs, checkServer(api.server, results)...)
	}
	return errors.Join(errs...)
}
