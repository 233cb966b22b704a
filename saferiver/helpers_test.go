package saferiver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

const consumer = "c0ffee00-0000-4000-8000-000000000001"

// sqliteDB opens a fresh migrated SQLite file with the business table.
func sqliteDB(t testing.TB) (*sql.DB, *riversqlite.Driver) {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	driver := riversqlite.New(db)
	if err := saferiver.Migrate(context.Background(), driver); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE invoices (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, entity_id TEXT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE payouts (id INTEGER PRIMARY KEY, client_transfer_id TEXT NOT NULL UNIQUE, transfer_id INTEGER)`); err != nil {
		t.Fatal(err)
	}
	return db, driver
}

// fakes are the two in-process APIs and clients for them.
type fakes struct {
	chift    *saferetrytest.ChiftServer
	zerohash *saferetrytest.ZeroHashServer
	chiftC   *saferetry.Client
	zhC      *saferetry.Client
}

func newFakes(t testing.TB) *fakes {
	t.Helper()
	f := &fakes{chift: saferetrytest.NewChiftServer(), zerohash: saferetrytest.NewZeroHashServer()}
	t.Cleanup(f.chift.Close)
	t.Cleanup(f.zerohash.Close)
	f.chift.SlowDelay, f.zerohash.SlowDelay = 150*time.Millisecond, 150*time.Millisecond
	f.chift.RetryAfterSeconds, f.zerohash.RetryAfterSeconds = 1, 1
	var err error
	f.chiftC, err = saferetry.NewClient(f.chift.URL, saferetry.WithChift(),
		saferetry.WithAttemptTimeout(100*time.Millisecond), saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.zhC, err = saferetry.NewClient(f.zerohash.URL, saferetry.WithZeroHashAuth(f.zerohash.APIKey, f.zerohash.Secret, f.zerohash.Passphrase),
		saferetry.WithAttemptTimeout(100*time.Millisecond), saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// chiftThrough replaces f's Chift client by one that sends through base,
// with opts.
func (f *fakes) chiftThrough(t testing.TB, base http.RoundTripper, opts ...saferetry.Option) {
	t.Helper()
	c, err := saferetry.NewClient(f.chift.URL, append([]saferetry.Option{saferetry.WithChift(),
		saferetry.WithHTTPClient(&http.Client{Transport: base})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.chiftC = c
}

func invoice(n int) saferetry.ChiftCreate {
	return saferetry.ChiftCreate{Path: "consumers/" + consumer + "/invoicing/invoices",
		Body:       map[string]any{"invoice_number": fmt.Sprintf("INV-%d", n), "total": n},
		ConsumerID: consumer, ConnectionID: "", // set by the caller
	}
}

func transfer(n int) saferetry.TransferRequest {
	return saferetry.TransferRequest{FromParticipantCode: "DEMO01", FromAccountGroup: "00SCXM", ToParticipantCode: "CUST01",
		ToAccountGroup: "00SCXM", Asset: "USD", Amount: fmt.Sprintf("%d.25", n)}
}

// fastRetries retries a failed job after 50 ms, so tests need not sit out
// River's attempt^4 seconds.
type fastRetries struct{}

func (fastRetries) NextRetry(*rivertype.JobRow) time.Time {
	return time.Now().Add(50 * time.Millisecond)
}

func riverConfig(workers *river.Workers) *river.Config {
	return &river.Config{
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 8}},
		Workers:              workers,
		FetchPollInterval:    20 * time.Millisecond,
		FetchCooldown:        5 * time.Millisecond,
		RetryPolicy:          fastRetries{},
		JobTimeout:           20 * time.Second,
		RescueStuckJobsAfter: 30 * time.Second,
		TestOnly:             true,
	}
}

// waitFinal waits until every job is completed, cancelled or discarded.
func waitFinal[TTx any](t testing.TB, client *river.Client[TTx], want int, within time.Duration) []*rivertype.JobRow {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		res, err := client.JobList(context.Background(), river.NewJobListParams().First(10000).
			States(rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded))
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if err == nil && len(res.Jobs) >= want {
			return res.Jobs
		}
		if time.Now().After(deadline) {
			all, _ := client.JobList(context.Background(), river.NewJobListParams().First(10000))
			for _, j := range all.Jobs {
				t.Logf("job %d %s attempt %d errors %v", j.ID, j.State, j.Attempt, j.Errors)
			}
			t.Fatalf("%d jobs final after %v, want %d", len(res.Jobs), within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
