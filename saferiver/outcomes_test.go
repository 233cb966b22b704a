package saferiver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	saferetry "github.com/saferetry/saferetry-go"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
)

// finalJob waits for the job under key to end and returns it.
func finalJob[TTx any](t *testing.T, r *rig[TTx], key string) *rivertype.JobRow {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := r.client.JobList(context.Background(), river.NewJobListParams().First(1000))
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range res.Jobs {
			if keyOf(t, j) == key && j.FinalizedAt != nil {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job of key %s did not end", key)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHookFailureRollsBackAndRunsAgain(t *testing.T) {
	both(t, testHookFailure[*sql.Tx], testHookFailure[pgx.Tx])
}

// The hook fails on its first two runs for each key: the job's completion
// rolls back with it, the job runs again, finds the same entity under the
// same key, and the third run commits.
func testHookFailure[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	var mu sync.Mutex // the two jobs run at once
	failures := map[string]int{}
	r := newRig(t, s, f, nil, func(key string, _ int64) error {
		mu.Lock()
		defer mu.Unlock()
		if failures[key] < 2 {
			failures[key]++
			return errors.New("business table unavailable")
		}
		return nil
	})
	inv, tr := r.insert(t, 1, false, nil)
	r.s.start(t, r.client)
	for _, key := range []string{inv, tr} {
		j := finalJob(t, r, key)
		out := outputOf(t, j)
		if j.State != rivertype.JobStateCompleted || j.Attempt != 3 || out.Outcome != "recovered" || out.Attempt != 3 {
			t.Errorf("key %s: job %s at attempt %d, output %+v; want completed at attempt 3, recovered", key, j.State, j.Attempt, out)
		}
		if len(j.Errors) != 2 || !strings.Contains(j.Errors[0].Error, "business table unavailable") {
			t.Errorf("key %s: errors %v, want the hook's two failures", key, j.Errors)
		}
	}
	if f.chift.Created() != 1 || f.zerohash.Created() != 1 {
		t.Errorf("created %d invoices, %d transfers; want 1 and 1", f.chift.Created(), f.zerohash.Created())
	}
	if runs := s.one(t, "SELECT count(*) FROM hook_runs"); runs != "2" || r.h.calls.Load() != 6 {
		t.Errorf("%s hook runs committed of %d calls, want 2 of 6", runs, r.h.calls.Load())
	}
	checkRows(t, s, f, map[string]bool{inv: true, tr: true})
}

func TestRefusedCreateIsCancelledWithItsError(t *testing.T) {
	both(t, testRefused[*sql.Tx], testRefused[pgx.Tx])
}

// Two invoices with one invoice number: Chift refuses the second with its
// business 409, which spends the request id: the job is cancelled, once.
func testRefused[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, nil)
	first, _ := r.insert(t, 7, false, nil)
	r.s.start(t, r.client)
	if j := finalJob(t, r, first); j.State != rivertype.JobStateCompleted {
		t.Fatalf("first invoice: %s %v", j.State, j.Errors)
	}
	second, _ := r.insert(t, 7, false, nil) // the same invoice_number, a new request id
	j := finalJob(t, r, second)
	out := outputOf(t, j)
	if j.State != rivertype.JobStateCancelled || j.Attempt != 1 || out.Outcome != "rejected" || out.StatusCode != 409 || out.Key != second {
		t.Fatalf("second invoice: job %s attempt %d output %+v", j.State, j.Attempt, out)
	}
	// The refusal reads ERROR_INVOICE_NUMBER_ALREADY_USED, or, when its
	// answer was lost to the attempt timeout and the repost met
	// REQUEST_ALREADY_PROCESSED, the 409 Chift recorded.
	if !strings.Contains(out.Error, "rejected, nothing created") ||
		!(strings.Contains(out.Error, "ERROR_INVOICE_NUMBER_ALREADY_USED") || strings.Contains(out.Error, "answered 409")) ||
		len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Error, second) {
		t.Fatalf("second invoice: output error %q, job errors %v", out.Error, j.Errors)
	}
	if f.chift.Created() != 1 || f.chift.CreatedWithKey(second) != 0 {
		t.Fatalf("%d invoices created, %d under the refused key", f.chift.Created(), f.chift.CreatedWithKey(second))
	}
	if got := s.one(t, "SELECT key || ' ' || outcome || ' ' || kind FROM failures"); got != second+" rejected rejected" {
		t.Fatalf("failures table: %q, want the refused key, rejected", got)
	}
}

func TestExpiredKeyIsCancelledForReconciliation(t *testing.T) {
	both(t, testExpired[*sql.Tx], testExpired[pgx.Tx])
}

// A transfer job whose earlier attempt may have posted, created 80 hours
// ago: zerohash may have forgotten the id, so the worker looks it up and,
// finding nothing, must not post: the job is cancelled for reconciliation,
// naming the key.
func testExpired[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, nil)
	_, key := r.insert(t, 1, false, nil)
	_, _ = r.insert(t, 2, false, nil) // a young pair, to see the workers run
	aged := time.Now().Add(-80 * time.Hour).UTC()
	// One attempt already made: the next is a resume.
	if err := s.exec(context.Background(), "UPDATE river_job SET created_at = $1, attempt = 1 WHERE kind = $2 AND id = (SELECT min(id) FROM river_job WHERE kind = $2)",
		aged, saferiver.TransferCreateKind); err != nil {
		t.Fatal(err)
	}
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out := outputOf(t, j)
	if j.State != rivertype.JobStateCancelled || out.Outcome != "reconcile" || out.Key != key ||
		!strings.Contains(out.Error, "needs manual reconciliation") || !strings.Contains(out.Error, key) {
		t.Fatalf("aged transfer: job %s, output %+v", j.State, out)
	}
	if got := s.one(t, "SELECT key || ' ' || outcome || ' ' || kind FROM failures"); got != key+" reconcile reconcile" {
		t.Fatalf("failures table: %q, want the aged key, reconcile", got)
	}
	if f.zerohash.CreatedWithClientTransferID(key) != 0 || f.zerohash.Created() != 1 {
		t.Fatalf("transfers: %d under the aged key, %d in all; want 0 and 1 (the young one)", f.zerohash.CreatedWithClientTransferID(key), f.zerohash.Created())
	}
	for _, req := range f.zerohash.Requests() {
		if req.Method == "POST" && req.Status == 0 {
			t.Fatalf("unexpected dropped post %+v", req)
		}
	}
}

func TestUnknownOutcomeOnTheLastAttemptIsCancelledForReconciliation(t *testing.T) {
	both(t, testLastAttempt[*sql.Tx], testLastAttempt[pgx.Tx])
}

// zerohash creates the transfer but the answer is lost, and the transfer
// stays invisible to lookups: the outcome is unknown. With attempts left
// the job is retried; on its last it is cancelled, naming the key, and the
// transfer exists once.
func testLastAttempt[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	f.zerohash.SetVisibilityDelay(time.Hour)
	f.zerohash.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultDropAfterProcessing })
	r := newRig(t, s, f, nil, nil)
	ctx := context.Background()
	var key string
	r.s.inTx(t, false, func(tx TTx) {
		e, err := saferiver.InsertTransferCreateTx(ctx, r.client, tx, transfer(3), &saferiver.InsertOpts{River: river.InsertOpts{MaxAttempts: 2}})
		if err != nil {
			t.Fatal(err)
		}
		key = e.Key
	})
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out := outputOf(t, j)
	if j.State != rivertype.JobStateCancelled || j.Attempt != 2 || out.Outcome != "reconcile" ||
		!strings.Contains(out.Error, "the outcome is still unknown: the job's last attempt (2) ended") || !strings.Contains(out.Error, key) {
		t.Fatalf("job %s attempt %d output %+v errors %v", j.State, j.Attempt, out, j.Errors)
	}
	if !strings.Contains(j.Errors[0].Error, "outcome unknown") {
		t.Fatalf("first attempt's error %q, want outcome unknown", j.Errors[0].Error)
	}
	if n := f.zerohash.CreatedWithClientTransferID(key); n != 1 {
		t.Fatalf("%d transfers under the key, want 1", n)
	}
}

func TestARunThatIsNoLongerTheJobsDoesNotComplete(t *testing.T) {
	both(t, testStaleRun[*sql.Tx], testStaleRun[pgx.Tx])
}

// While the first attempt's create is on the wire, the job's row moves on
// to attempt 2, as when River rescues a job it presumed dead and another
// worker takes it. The first run must not complete the job or run the
// hook; a later attempt finds the invoice under the same key and does,
// once.
func testStaleRun[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	var bumped atomic.Bool
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPost && bumped.CompareAndSwap(false, true) {
			if err := s.exec(req.Context(), "UPDATE river_job SET attempt = attempt + 1 WHERE kind = $1", saferiver.ChiftCreateKind); err != nil {
				return nil, err
			}
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	f.chiftThrough(t, base, saferetry.WithAttemptTimeout(time.Second), saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond))
	r := newRig(t, s, f, nil, nil)
	key, _ := r.insert(t, 1, false, nil)
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out := outputOf(t, j)
	if j.State != rivertype.JobStateCompleted || out.Outcome != "recovered" || j.Attempt != 3 {
		t.Fatalf("job %s attempt %d output %+v errors %v", j.State, j.Attempt, out, j.Errors)
	}
	if len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Error, "is no longer this run's") {
		t.Fatalf("errors %v, want the stale run's", j.Errors)
	}
	if runs := s.one(t, "SELECT count(*) FROM hook_runs WHERE key = $1", key); runs != "1" || f.chift.CreatedWithKey(key) != 1 {
		t.Fatalf("%s hook runs committed, %d invoices; want 1 and 1", runs, f.chift.CreatedWithKey(key))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestInvalidArgsAreCancelledBeforeSending(t *testing.T) {
	both(t, testInvalidArgs[*sql.Tx], testInvalidArgs[pgx.Tx])
}

// Args inserted without the insert helpers, which Create would refuse:
// cancelled on their first attempt, nothing sent.
func testInvalidArgs[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, nil)
	ctx := context.Background()
	bad := saferiver.TransferCreateArgs{ClientTransferID: "3b1f0f0e-8a51-4c47-9a0a-2d5b7e1c9d01", Transfer: transfer(1)}
	bad.Transfer.Amount = "ten"
	noKey := saferiver.ChiftCreateArgs{Path: "consumers/" + consumer + "/invoicing/invoices", Body: `{"total":1}`,
		ConsumerID: consumer, ConnectionID: f.chift.ConnectionID}
	notObject := noKey
	notObject.RequestID, notObject.Body = "a-request-id", `[1]`
	r.s.inTx(t, false, func(tx TTx) {
		for _, args := range []river.JobArgs{bad, noKey, notObject} {
			if _, err := r.client.InsertTx(ctx, tx, args, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
	r.s.start(t, r.client)
	for key, want := range map[string]string{bad.ClientTransferID: "Amount", "": "request_id is empty", "a-request-id": "not an object"} {
		j := finalJob(t, r, key)
		out := outputOf(t, j)
		if j.State != rivertype.JobStateCancelled || j.Attempt != 1 || out.Outcome != "rejected" || !strings.Contains(out.Error, want) {
			t.Errorf("key %q: job %s attempt %d output %+v", key, j.State, j.Attempt, out)
		}
	}
	if n := len(f.chift.Requests()) + len(f.zerohash.Requests()); n != 0 {
		t.Errorf("%d requests sent, want 0", n)
	}
}

func TestAHookThatNeverSucceedsEndsForReconciliation(t *testing.T) {
	both(t, testHookNeverSucceeds[*sql.Tx], testHookNeverSucceeds[pgx.Tx])
}

// The entity exists but the hook fails on every attempt: on the last the
// job is cancelled for reconciliation, its output holding the entity id.
func testHookNeverSucceeds[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, func(string, int64) error { return errors.New("constraint violated") })
	ctx := context.Background()
	var key string
	r.s.inTx(t, false, func(tx TTx) {
		e, err := saferiver.InsertChiftCreateTx(ctx, r.client, tx, withConnection(invoice(1), f.chift.ConnectionID),
			&saferiver.InsertOpts{River: river.InsertOpts{MaxAttempts: 2}})
		if err != nil {
			t.Fatal(err)
		}
		key = e.Key
	})
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out := outputOf(t, j)
	if j.State != rivertype.JobStateCancelled || j.Attempt != 2 || out.EntityID != "inv_1" || out.Outcome != "reconcile" ||
		!strings.Contains(out.Error, "needs manual reconciliation") || !strings.Contains(out.Error, "the create exists (id inv_1)") ||
		!strings.Contains(out.Error, "write the id into the business record") || strings.Contains(out.Error, "look the key up") ||
		!strings.Contains(out.Error, "constraint violated") {
		t.Fatalf("job %s attempt %d output %+v", j.State, j.Attempt, out)
	}
	if f.chift.Created() != 1 {
		t.Fatalf("%d invoices, want 1", f.chift.Created())
	}
	if got := s.one(t, "SELECT key || ' ' || outcome || ' ' || kind || ' ' || entity FROM failures"); got != key+" reconcile reconcile inv_1" {
		t.Fatalf("failures table: %q, want the key, reconcile, inv_1", got)
	}
}

func TestAFailingFailureHookFailsTheAttempt(t *testing.T) {
	both(t, testFailureHookFails[*sql.Tx], testFailureHookFails[pgx.Tx])
}

// The failure hook fails on its first run: its write rolls back, the
// attempt fails, the next attempt meets the same refusal and the hook
// commits: one row, the job cancelled.
func testFailureHookFails[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, nil)
	r.h.failFailed = func(call int64) error {
		if call == 1 {
			return errors.New("disk full")
		}
		return nil
	}
	first, _ := r.insert(t, 7, false, nil)
	r.s.start(t, r.client)
	if j := finalJob(t, r, first); j.State != rivertype.JobStateCompleted {
		t.Fatalf("first invoice: %s %v", j.State, j.Errors)
	}
	second, _ := r.insert(t, 7, false, nil)
	j := finalJob(t, r, second)
	if j.State != rivertype.JobStateCancelled || j.Attempt != 2 || len(j.Errors) != 2 || !strings.Contains(j.Errors[0].Error, "the failure hook failed: disk full") {
		t.Fatalf("job %s attempt %d errors %v", j.State, j.Attempt, j.Errors)
	}
	if got := s.one(t, "SELECT count(*) FROM failures"); got != "1" || r.h.failedCalls.Load() != 2 {
		t.Fatalf("%s failure rows of %d hook calls, want 1 of 2", got, r.h.failedCalls.Load())
	}
}

func TestARunThatIsNoLongerTheJobsDoesNotCancelIt(t *testing.T) {
	both(t, testStaleCancel[*sql.Tx], testStaleCancel[pgx.Tx])
}

// The first attempt meets a refusal (a 400 that would cancel the job),
// but by then the job's row has moved on to attempt 2, as when River
// rescued it and another worker took it. The stale run must neither run
// the failure hook nor cancel the job under the other run; the job goes
// on and the invoice is created once.
func testStaleCancel[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	var bumped atomic.Bool
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPost && bumped.CompareAndSwap(false, true) {
			if err := s.exec(req.Context(), "UPDATE river_job SET attempt = attempt + 1 WHERE kind = $1", saferiver.ChiftCreateKind); err != nil {
				return nil, err
			}
			return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(`{"status":"error","message":"refused by a test","error_code":"ERROR_TEST"}`)), Request: req}, nil
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	f.chiftThrough(t, base, saferetry.WithAttemptTimeout(time.Second), saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond))
	r := newRig(t, s, f, nil, nil)
	key, _ := r.insert(t, 1, false, nil)
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	if j.State != rivertype.JobStateCompleted || len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Error, "not cancelled here") {
		t.Fatalf("job %s attempt %d errors %v; want completed after the stale run's refusal", j.State, j.Attempt, j.Errors)
	}
	if got := s.one(t, "SELECT count(*) FROM failures"); got != "0" || r.h.failedCalls.Load() != 0 {
		t.Fatalf("%s failure rows, %d failure hook calls; want none", got, r.h.failedCalls.Load())
	}
	if f.chift.CreatedWithKey(key) != 1 || s.one(t, "SELECT count(*) FROM hook_runs WHERE key = $1", key) != "1" {
		t.Fatalf("%d invoices, want 1, and one hook run", f.chift.CreatedWithKey(key))
	}
}

func TestAnEarlierAttemptsEntityOutlivesALaterFailure(t *testing.T) {
	both(t, testEarlierEntity[*sql.Tx], testEarlierEntity[pgx.Tx])
}

// Attempt 1 creates the invoice but its hook fails; attempt 2, the last,
// finds Chift unreachable. The job ends for reconciliation with the
// invoice's id, which attempt 1 learned, not as "nothing created".
func testEarlierEntity[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	var down atomic.Bool
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if down.Load() {
			req = req.Clone(req.Context())
			req.URL.Host = "127.0.0.1:1"
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	f.chiftThrough(t, base, saferetry.WithAttemptTimeout(time.Second), saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
	r := newRig(t, s, f, nil, func(string, int64) error {
		down.Store(true)
		return errors.New("row locked")
	})
	ctx := context.Background()
	var key string
	r.s.inTx(t, false, func(tx TTx) {
		e, err := saferiver.InsertChiftCreateTx(ctx, r.client, tx, withConnection(invoice(1), f.chift.ConnectionID),
			&saferiver.InsertOpts{River: river.InsertOpts{MaxAttempts: 2}})
		if err != nil {
			t.Fatal(err)
		}
		key = e.Key
	})
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out, err := saferiver.OutputOf(j)
	if err != nil || out == nil {
		t.Fatalf("output: %v, %v", out, err)
	}
	if j.State != rivertype.JobStateCancelled || j.Attempt != 2 || out.Outcome != "reconcile" || out.EntityID != "inv_1" ||
		!strings.Contains(out.Error, "attempt 1 obtained the create (id inv_1)") || strings.Contains(out.Error, "none created") {
		t.Fatalf("job %s attempt %d output %+v", j.State, j.Attempt, out)
	}
	if got := s.one(t, "SELECT entity FROM failures WHERE key = $1", key); got != "inv_1" {
		t.Fatalf("the failure hook got entity %q, want inv_1", got)
	}
}

func TestACancelFromOutsideMidCreateIsReconciled(t *testing.T) {
	both(t, testRemoteCancel[*sql.Tx], testRemoteCancel[pgx.Tx])
}

// The job is cancelled from outside (River's Client.JobCancel) after its
// post reached Chift and before the answer came back: the invoice may
// exist, so the job ends for reconciliation, its failure hook run.
func testRemoteCancel[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	posted := make(chan struct{}, 1)
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodPost {
			return http.DefaultTransport.RoundTrip(req)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		posted <- struct{}{}
		<-req.Context().Done() // the answer is lost while the job is cancelled
		return nil, req.Context().Err()
	})
	f.chiftThrough(t, base, saferetry.WithAttemptTimeout(time.Minute))
	r := newRig(t, s, f, nil, nil)
	key, _ := r.insert(t, 1, false, nil)
	r.s.start(t, r.client)
	<-posted
	jobs, err := r.client.JobList(context.Background(), river.NewJobListParams().Kinds(saferiver.ChiftCreateKind))
	if err != nil || len(jobs.Jobs) != 1 {
		t.Fatalf("jobs %v, %v", jobs, err)
	}
	if _, err := r.client.JobCancel(context.Background(), jobs.Jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	j := finalJob(t, r, key)
	out, _ := saferiver.OutputOf(j)
	if j.State != rivertype.JobStateCancelled || out == nil || out.Outcome != "reconcile" || !strings.Contains(out.Error, "cancelled from outside") {
		t.Fatalf("job %s output %+v errors %v", j.State, out, j.Errors)
	}
	if got := s.one(t, "SELECT kind FROM failures WHERE key = $1", key); got != "reconcile" {
		t.Fatalf("failure hook recorded %q, want reconcile", got)
	}
	if f.chift.CreatedWithKey(key) != 1 {
		t.Fatalf("%d invoices", f.chift.CreatedWithKey(key))
	}
}

func TestALongQueuedJobResumesFromItsFirstAttempt(t *testing.T) {
	both(t, testLongQueued[*sql.Tx], testLongQueued[pgx.Tx])
}

// A transfer job first attempted 80 hours after its insert (scheduled
// ahead, or a backlog): its first post's answer is lost and the transfer
// stays invisible for a while, so attempt 1 ends unknown. Attempt 2 must
// resume from attempt 1's start, not from the insert, which would put the
// id past zerohash's 72 h window and end the job for reconciliation.
func testLongQueued[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	f.zerohash.SetVisibilityDelay(1500 * time.Millisecond)
	f.zerohash.SetFaultFunc(func(_ string, attempt int) saferetrytest.Fault {
		if attempt == 1 {
			return saferetrytest.FaultDropAfterProcessing
		}
		return saferetrytest.FaultNone
	})
	r := newRig(t, s, f, nil, nil)
	_, key := r.insert(t, 1, false, nil)
	if err := s.exec(context.Background(), "UPDATE river_job SET created_at = $1 WHERE kind = $2",
		time.Now().Add(-80*time.Hour).UTC(), saferiver.TransferCreateKind); err != nil {
		t.Fatal(err)
	}
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out, _ := saferiver.OutputOf(j)
	if j.State != rivertype.JobStateCompleted || j.Attempt < 2 || out == nil || out.Outcome != "recovered" ||
		time.Since(out.FirstSentBy) > time.Minute {
		t.Fatalf("job %s attempt %d output %+v errors %v", j.State, j.Attempt, out, j.Errors)
	}
	if f.zerohash.CreatedWithClientTransferID(key) != 1 {
		t.Fatalf("%d transfers", f.zerohash.CreatedWithClientTransferID(key))
	}
}

func TestAStartRecordedByAClockAheadIsNotInTheFuture(t *testing.T) {
	both(t, testStampAhead[*sql.Tx], testStampAhead[pgx.Tx])
}

// An earlier attempt, on a host whose clock runs 10 minutes ahead,
// recorded the first send's bound; this host resumes the transfer: the
// bound is taken as now at the latest, never refused as in the future.
func testStampAhead[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	r := newRig(t, s, f, nil, nil)
	_, key := r.insert(t, 1, false, nil)
	ahead, err := json.Marshal(map[string]any{"output": saferiver.Output{API: "zerohash", Key: key, Outcome: "sending", Attempt: 1,
		FirstSentBy: time.Now().Add(10 * time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.exec(context.Background(), "UPDATE river_job SET attempt = 1, metadata = $1 WHERE kind = $2", string(ahead), saferiver.TransferCreateKind); err != nil {
		t.Fatal(err)
	}
	r.s.start(t, r.client)
	j := finalJob(t, r, key)
	out, _ := saferiver.OutputOf(j)
	if j.State != rivertype.JobStateCompleted || out == nil || time.Until(out.FirstSentBy) > 0 || f.zerohash.CreatedWithClientTransferID(key) != 1 {
		t.Fatalf("job %s output %+v errors %v", j.State, out, j.Errors)
	}
}
