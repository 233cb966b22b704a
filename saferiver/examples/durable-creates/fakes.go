package main

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// fakes are the in-process Chift and zerohash, run by the parent process
// so that their counts outlive the workers it kills.
type fakes struct {
	chift    *saferetrytest.ChiftServer
	zerohash *saferetrytest.ZeroHashServer
}

// The SDK's attempt timeout in the workers, and the fakes' slow commit,
// longer than it: a slow commit is an attempt that timed out on a create
// the API then made.
const (
	attemptTimeout = 500 * time.Millisecond
	slowCommit     = 800 * time.Millisecond
)

func startFakes() *fakes {
	f := &fakes{chift: saferetrytest.NewChiftServer(), zerohash: saferetrytest.NewZeroHashServer()}
	f.chift.RequireAuth = true // the workers get a token with WithChiftAuth, as against Chift
	f.chift.SlowDelay, f.zerohash.SlowDelay = slowCommit, slowCommit
	return f
}

func (f *fakes) close() {
	f.chift.Close()
	f.zerohash.Close()
}

// createdWith is how many entities the API of api created under key.
func (f *fakes) createdWith(api, key string) int {
	if api == chiftAPI {
		return f.chift.CreatedWithKey(key)
	}
	return f.zerohash.CreatedWithClientTransferID(key)
}

// firstPostFaults are what a faulted create's first POST meets.
var firstPostFaults = []saferetrytest.Fault{
	saferetrytest.FaultDropAfterProcessing, // created, the answer lost
	saferetrytest.FaultSlowCommit,          // created after the attempt timed out
	saferetrytest.FaultResetMidBody,        // created, the answer cut off
	saferetrytest.FaultInternalError,       // 500, not created
	saferetrytest.FaultBadGateway,          // a proxy's 502, not created
	saferetrytest.FaultDropBeforeProcessing,
}

// faultShare is the share of creates whose first POST is faulted.
const faultShare = 0.3

// planned is what the fakes do to one create's POSTs.
type planned struct {
	latency time.Duration       // before every POST is processed
	first   saferetrytest.Fault // on the first POST
}

// fault draws, from seed, the creates whose first POST is faulted
// (faultShare of the committed ones) and their faults, and a latency for
// every POST, and gives them to the fakes. The fakes answer at once, a
// real API in tens of milliseconds: the latency keeps the first worker
// busy long enough to be killed mid-flight. The fakes call the fault func
// for every POST, outside their locks, so waiting in it holds up that
// request only.
func (f *fakes) fault(out io.Writer, led *ledger, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	committed := led.committed()
	plan := map[string]planned{}
	for _, e := range committed {
		plan[e.key] = planned{latency: time.Duration(40+rng.IntN(80)) * time.Millisecond}
	}
	faulted := int(math.Round(faultShare * float64(len(committed))))
	tally := map[saferetrytest.Fault]int{}
	for _, i := range rng.Perm(len(committed))[:faulted] {
		p := plan[committed[i].key]
		p.first = firstPostFaults[rng.IntN(len(firstPostFaults))]
		plan[committed[i].key] = p
		tally[p.first]++
	}
	// plan is only read from here on, by the fakes' handler goroutines.
	decide := func(key string, attempt int) saferetrytest.Fault {
		p := plan[key]
		time.Sleep(p.latency)
		if attempt > 1 {
			return saferetrytest.FaultNone
		}
		return p.first
	}
	f.chift.SetFaultFunc(decide)
	f.zerohash.SetFaultFunc(decide)
	var parts []string
	for _, fault := range firstPostFaults {
		if tally[fault] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", fault, tally[fault]))
		}
	}
	fmt.Fprintf(out, "   the fakes will fault the first POST of %d of the %d: %s\n", faulted, len(committed), strings.Join(parts, ", "))
}

// endpoints is what a worker needs to reach the two APIs: their URLs and
// the credentials the fakes accept.
type endpoints struct {
	chiftURL, chiftClientID, chiftClientSecret, chiftAccountID string
	zerohashURL, zerohashAPIKey, zerohashSecret, zerohashPass  string
}

func (f *fakes) endpoints() endpoints {
	return endpoints{
		chiftURL: f.chift.URL, chiftClientID: f.chift.ClientID, chiftClientSecret: f.chift.ClientSecret, chiftAccountID: f.chift.AccountID,
		zerohashURL: f.zerohash.URL, zerohashAPIKey: f.zerohash.APIKey, zerohashSecret: f.zerohash.Secret, zerohashPass: f.zerohash.Passphrase,
	}
}

// The environment that hands endpoints to a worker process.
var endpointEnv = []string{
	"DURABLE_CREATES_CHIFT_URL", "DURABLE_CREATES_CHIFT_CLIENT_ID", "DURABLE_CREATES_CHIFT_CLIENT_SECRET", "DURABLE_CREATES_CHIFT_ACCOUNT_ID",
	"DURABLE_CREATES_ZEROHASH_URL", "DURABLE_CREATES_ZEROHASH_API_KEY", "DURABLE_CREATES_ZEROHASH_SECRET", "DURABLE_CREATES_ZEROHASH_PASSPHRASE",
}

func (e *endpoints) fields() []*string {
	return []*string{&e.chiftURL, &e.chiftClientID, &e.chiftClientSecret, &e.chiftAccountID,
		&e.zerohashURL, &e.zerohashAPIKey, &e.zerohashSecret, &e.zerohashPass}
}

func (e endpoints) env() []string {
	env := make([]string, len(endpointEnv))
	for i, field := range e.fields() {
		env[i] = endpointEnv[i] + "=" + *field
	}
	return env
}

func endpointsFromEnv() (endpoints, error) {
	var e endpoints
	for i, field := range e.fields() {
		if *field = os.Getenv(endpointEnv[i]); *field == "" {
			return e, fmt.Errorf("%s is not set: a worker is started by durable-creates itself", endpointEnv[i])
		}
	}
	return e, nil
}

// clients are the SDK clients a worker sends with. The attempt timeout
// and the backoff are short for the fakes on loopback; against the real
// APIs, keep the SDK's defaults.
func (e endpoints) clients() (chift, zerohash *saferetry.Client, err error) {
	chift, err = saferetry.NewClient(e.chiftURL,
		saferetry.WithChiftAuth(saferetry.ChiftCredentials{ClientID: e.chiftClientID, ClientSecret: e.chiftClientSecret, AccountID: e.chiftAccountID}),
		saferetry.WithAttemptTimeout(attemptTimeout), saferetry.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	zerohash, err = saferetry.NewClient(e.zerohashURL,
		saferetry.WithZeroHashAuth(e.zerohashAPIKey, e.zerohashSecret, e.zerohashPass),
		saferetry.WithAttemptTimeout(attemptTimeout), saferetry.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	return chift, zerohash, nil
}
