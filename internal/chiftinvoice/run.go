// Package chiftinvoice is the program of examples/chift-invoice: it
// creates invoices through Chift's invoicing API with saferetry's Client and
// prints what every attempt did (that command's doc tells the whole story).
// It lives here, in an internal package, so that a second command can run
// the same program with more options: saferetryotel/examples/chift-invoice
// adds OpenTelemetry tracing, which the core module must not import.
package chiftinvoice

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Config is what the command's flags set.
type Config struct {
	BaseURL string // the Chift API to send to; "" starts the in-process fake
	N       int    // number of invoices to create
}

// RegisterFlags defines -base-url and -n on fs, with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BaseURL, "base-url", "", "Chift API to send to, e.g. https://api.chift.eu (default: an in-process fake)")
	fs.IntVar(&c.N, "n", len(scenarios), "number of invoices to create")
}

// Run creates the invoices, prints the trace and the summary and, against
// the fake, checks the server's records: an error means the check failed.
// extra options go to the Client after the program's own.
func Run(c Config, extra ...saferetry.Option) error {
	if c.N < 1 {
		return fmt.Errorf("-n is %d; at least 1 invoice is needed", c.N)
	}
	api, err := newTarget(c.BaseURL)
	if err != nil {
		return err
	}
	defer api.close()
	plan := planInvoices(api, c.N)
	client, err := newClient(api, extra)
	if err != nil {
		return err
	}
	fmt.Printf("Creating %d invoices for consumer %s at %s\n", c.N, api.consumerID, api.where())
	outcomes := createAll(client, api, plan)
	printSummary(outcomes)
	return check(api.server, plan, outcomes)
}

// demoConsumerID is the consumer the in-process server books invoices for;
// the fake accepts any id.
const demoConsumerID = "00000000-0000-4000-8000-000000000001"

// maxBackoff caps the waits between attempts so the demo takes seconds; a
// longer wait can only come from a Retry-After.
const maxBackoff = 500 * time.Millisecond

// target is the API the invoices go to: the in-process fake (server set)
// or a real one.
type target struct {
	baseURL      string
	creds        saferetry.ChiftCredentials
	consumerID   string
	connectionID string
	server       *saferetrytest.ChiftServer // nil for a real API
	// runID keeps invoice numbers and keys unique across runs against a
	// real API, where Chift remembers keys for 6 months; the fake starts
	// empty, so a fixed id keeps its trace the same on every run.
	runID string
	// attemptTimeout bounds one attempt. Chift may itself retry a rate-limited
	// connector for about 31s, so a real API gets a long bound; the fake
	// answers at once and a short bound keeps a hung attempt from stalling
	// the demo. createTimeout bounds a whole create, its log lookups included.
	attemptTimeout, createTimeout time.Duration
}

func newTarget(baseURL string) (*target, error) {
	if baseURL == "" {
		return fakeTarget(), nil
	}
	env, err := readEnv()
	if err != nil {
		return nil, err
	}
	return &target{
		baseURL: baseURL,
		creds: saferetry.ChiftCredentials{
			ClientID: env["CHIFT_CLIENT_ID"], ClientSecret: env["CHIFT_CLIENT_SECRET"],
			AccountID: env["CHIFT_ACCOUNT_ID"], EnvID: env["CHIFT_ENV_ID"],
		},
		consumerID: env["CHIFT_CONSUMER_ID"], connectionID: env["CHIFT_CONNECTION_ID"],
		runID:          time.Now().UTC().Format("20060102T150405"),
		attemptTimeout: time.Minute, createTimeout: 5 * time.Minute,
	}, nil
}

// fakeTarget starts the in-process server and uses its own credentials.
// RequireAuth makes it refuse requests without a token, as Chift does.
func fakeTarget() *target {
	srv := saferetrytest.NewChiftServer()
	srv.RequireAuth = true
	return &target{
		baseURL:    srv.URL,
		creds:      saferetry.ChiftCredentials{ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, AccountID: srv.AccountID},
		consumerID: demoConsumerID, connectionID: srv.ConnectionID, server: srv,
		runID: "demo", attemptTimeout: srv.SlowDelay + time.Second, createTimeout: 10 * time.Second,
	}
}

// requiredEnv is what -base-url needs; CHIFT_ENV_ID is optional.
var requiredEnv = []string{
	"CHIFT_CLIENT_ID", "CHIFT_CLIENT_SECRET", "CHIFT_ACCOUNT_ID", "CHIFT_CONSUMER_ID", "CHIFT_CONNECTION_ID",
}

// readEnv names every missing variable at once, so one run tells all.
func readEnv() (map[string]string, error) {
	env := map[string]string{"CHIFT_ENV_ID": os.Getenv("CHIFT_ENV_ID")}
	var missing []string
	for _, name := range requiredEnv {
		env[name] = os.Getenv(name)
		if strings.TrimSpace(env[name]) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("-base-url needs %s in the environment", strings.Join(missing, ", "))
	}
	return env, nil
}

// where names the API without the fake's random port, so the trace is the
// same on every run.
func (t *target) where() string {
	if t.server != nil {
		return "an in-process fake of Chift"
	}
	return t.baseURL
}

func (t *target) close() {
	if t.server != nil {
		t.server.Close()
	}
}

// newClient authenticates with the target's credentials; the 429's
// Retry-After still sets the wait when it is longer than maxBackoff.
func newClient(api *target, extra []saferetry.Option) (*saferetry.Client, error) {
	opts := []saferetry.Option{
		saferetry.WithChiftAuth(api.creds),
		saferetry.WithBackoff(50*time.Millisecond, maxBackoff),
		saferetry.WithAttemptTimeout(api.attemptTimeout),
		saferetry.WithObserver(printAttempt),
	}
	return saferetry.NewClient(api.baseURL, append(opts, extra...)...)
}
