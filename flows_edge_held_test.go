package saferetry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Two creates under one request id on different routes, the first still
// being committed when the second arrives: the second is told the id is
// another request's, and only the first's entity exists.
func TestFlowEdgeChiftSameIDOtherRouteWhileInProcess(t *testing.T) {
	r := newFlowRig(t)
	r.srv.SlowDelay = time.Hour
	r.srv.Script(saferetrytest.FaultSlowCommit)
	done := make(chan error, 1)
	go func() {
		_, err := r.create(context.Background(), "accounting", "C-1", invoice("C-1"))
		done <- err
	}()
	waitFor(t, "the first post in process", func() bool { return r.count("POST") == 1 })
	_, err := r.create(context.Background(), "invoicing", "C-1", invoice("C-2"))
	r.srv.ReleaseSlowCommits()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var reused *ChiftRequestIDReusedError
	if !errors.As(err, &reused) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want *ChiftRequestIDReusedError", err)
	}
	if r.srv.Created() != 1 {
		t.Fatalf("%d entities", r.srv.Created())
	}
}

// Two Transfers.Create under one id at once, the first held in a slow
// commit: one transfer, the second told the id is held.
func TestFlowEdgeTransfersSameIDConcurrently(t *testing.T) {
	srv := flowServer(t)
	srv.SlowDelay = time.Hour
	srv.Script(saferetrytest.FaultSlowCommit)
	c := flowClientOf(t, srv)
	const id = "conc-1"
	type result struct {
		tr  *Transfer
		err error
	}
	done := make(chan result, 1)
	go func() {
		tr, err := c.Transfers.Create(context.Background(), flowRequest(id))
		done <- result{tr, err}
	}()
	waitFor(t, "the first POST held", func() bool { return countMethod(srv, "POST") == 1 })
	second := make(chan result, 1)
	go func() {
		tr, err := c.Transfers.Create(context.Background(), flowRequest(id))
		second <- result{tr, err}
	}()
	waitFor(t, "the second POST waiting", func() bool { return countMethod(srv, "POST") == 2 })
	srv.ReleaseSlowCommits()
	// Which create's POST the server holds, and whether the other's answer
	// is "not unique" or ambiguous, depends on scheduling (a repost of the
	// first can be the second POST the test waits for). What must hold
	// whatever the order: one transfer; at least one create returns it;
	// the other returns it too (same fields, after its first send: a limit
	// RELIABILITY.md lists) or ErrDuplicateClientTransferID (with the same
	// fields inside ErrOutcomeUnknown: it cannot tell a twin from an
	// earlier call of its own), never another transfer.
	results := []result{<-done, <-second}
	var id64 int64
	for _, r := range results {
		if r.err == nil {
			if id64 != 0 && r.tr.ID != id64 {
				t.Fatalf("two creates returned transfers %d and %d", id64, r.tr.ID)
			}
			id64 = r.tr.ID
		} else if !errors.Is(r.err, ErrDuplicateClientTransferID) {
			t.Fatalf("a create ended %v; want the transfer or ErrDuplicateClientTransferID", r.err)
		}
	}
	if id64 == 0 {
		t.Fatalf("neither create returned the transfer: %v, %v", results[0].err, results[1].err)
	}
	if srv.CreatedWithClientTransferID(id) != 1 {
		t.Fatalf("%d transfers", srv.CreatedWithClientTransferID(id))
	}
}
