package saferetry_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Kind 1, through NewClient: a client Timeout ends the posts while Chift
// holds the create in process; Chift.Create must still learn the outcome
// from the monitoring log, not give up with the outcome unknown.
func TestChiftCreateUnderClientTimeoutAsksTheLog(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	srv.SlowDelay = time.Hour // held until ReleaseSlowCommits
	srv.Script(saferetrytest.FaultSlowCommit)
	client, err := saferetry.NewClient(srv.URL,
		saferetry.WithHTTPClient(&http.Client{Timeout: time.Second}),
		saferetry.WithChiftAuth(creds(srv)),
		saferetry.WithBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		created *saferetry.ChiftCreated
		err     error
	}
	done := make(chan result, 1)
	go func() {
		created, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
			Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "T-1"},
			ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "timeout-1",
		})
		done <- result{created, err}
	}()
	// Release the commit once every post has had its try, so the answer can
	// only come from the log.
	for posts := 0; posts < 3; {
		posts = 0
		for _, r := range srv.Requests() {
			if r.Method == http.MethodPost && r.Key == "timeout-1" {
				posts++
			}
		}
		select {
		case r := <-done:
			t.Fatalf("Create returned before the commit landed: %+v, %v", r.created, r.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	srv.ReleaseSlowCommits()
	r := <-done
	if r.err != nil || !r.created.Recovered || srv.CreatedWithKey("timeout-1") != 1 {
		t.Fatalf("got %+v, %v; created %d; want the invoice recovered from the log", r.created, r.err, srv.CreatedWithKey("timeout-1"))
	}
	if _, ok := srv.Entity(r.created.EntityID); !ok {
		t.Fatalf("EntityID %q is not the server's", r.created.EntityID)
	}
}
