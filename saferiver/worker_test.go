package saferiver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
)

func TestAddWorkersRefusesAConfigThatCannotCreate(t *testing.T) {
	f := newFakes(t)
	plain, err := saferetry.NewClient(f.chift.URL)
	if err != nil {
		t.Fatal(err)
	}
	hook := func(context.Context, *sql.Tx, *river.Job[saferiver.ChiftCreateArgs], *saferetry.ChiftCreated) error {
		return nil
	}
	for _, tc := range []struct {
		name string
		cfg  saferiver.Config[*sql.Tx]
		want string
	}{
		{"no client", saferiver.Config[*sql.Tx]{}, "neither a Chift nor a ZeroHash client"},
		{"Chift client without WithChift", saferiver.Config[*sql.Tx]{Chift: plain}, "not made with saferetry.WithChift()"},
		{"zerohash client made for Chift", saferiver.Config[*sql.Tx]{ZeroHash: f.chiftC}, "not made with saferetry.WithZeroHashRequestID()"},
		{"Chift hook without a Chift client", saferiver.Config[*sql.Tx]{ZeroHash: f.zhC, OnChiftCreated: hook}, "OnChiftCreated is set but Config.Chift is nil"},
	} {
		workers := river.NewWorkers()
		if err := saferiver.AddWorkers(workers, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
		// Nothing was registered: a River client given these workers and
		// a create job's kind would refuse to insert it.
		if err := saferiver.AddWorkers(workers, saferiver.Config[*sql.Tx]{Chift: f.chiftC, ZeroHash: f.zhC}); err != nil {
			t.Errorf("%s: the refused config registered a worker: %v", tc.name, err)
		}
	}
	if err := saferiver.AddWorkers[*sql.Tx](nil, saferiver.Config[*sql.Tx]{Chift: f.chiftC}); err == nil {
		t.Error("nil workers accepted")
	}
}

// hooks are the business-row hooks of the tests; calls counts every run,
// committed or not, and each run also inserts a hook_runs row in its
// transaction, so the rows count the runs that committed.
type hooks[TTx any] struct {
	s     *store[TTx]
	calls atomic.Int64
	fail  func(key string, call int64) error // nil: never

	failedCalls atomic.Int64
	failFailed  func(call int64) error // nil: never
}

func (h *hooks[TTx]) config(f *fakes) saferiver.Config[TTx] {
	return saferiver.Config[TTx]{
		Chift: f.chiftC, ZeroHash: f.zhC,
		OnChiftCreated: func(ctx context.Context, tx TTx, job *river.Job[saferiver.ChiftCreateArgs], c *saferetry.ChiftCreated) error {
			return h.run(ctx, tx, job.Args.RequestID, "UPDATE invoices SET entity_id = $1 WHERE request_id = $2", c.EntityID)
		},
		OnTransferCreated: func(ctx context.Context, tx TTx, job *river.Job[saferiver.TransferCreateArgs], tr *saferetry.Transfer) error {
			return h.run(ctx, tx, job.Args.ClientTransferID, "UPDATE payouts SET transfer_id = $1 WHERE client_transfer_id = $2", tr.ID)
		},
		OnChiftFailed: func(ctx context.Context, tx TTx, job *river.Job[saferiver.ChiftCreateArgs], out *saferiver.Output, err error) error {
			return h.failed(ctx, tx, out, err)
		},
		OnTransferFailed: func(ctx context.Context, tx TTx, job *river.Job[saferiver.TransferCreateArgs], out *saferiver.Output, err error) error {
			return h.failed(ctx, tx, out, err)
		},
	}
}

// failed records a cancelled job in the failures table, in its
// transaction; failFailed, when set, makes the hook fail after the write.
func (h *hooks[TTx]) failed(ctx context.Context, tx TTx, out *saferiver.Output, cause error) error {
	h.failedCalls.Add(1)
	var rejected *saferiver.RejectedError
	var reconcile *saferiver.ReconcileError
	kind := "?"
	switch {
	case errors.As(cause, &rejected):
		kind = "rejected"
	case errors.As(cause, &reconcile):
		kind = "reconcile"
	}
	if err := h.s.txExec(ctx, tx, "INSERT INTO failures (key, outcome, kind, entity) VALUES ($1, $2, $3, $4)",
		out.Key, out.Outcome, kind, entityOf(out)); err != nil {
		return err
	}
	if h.failFailed != nil {
		return h.failFailed(h.failedCalls.Load())
	}
	return nil
}

func (h *hooks[TTx]) run(ctx context.Context, tx TTx, key, update string, id any) error {
	call := h.calls.Add(1)
	if err := h.s.txExec(ctx, tx, "INSERT INTO hook_runs (key) VALUES ($1)", key); err != nil {
		return err
	}
	if err := h.s.txExec(ctx, tx, update, id, key); err != nil {
		return err
	}
	if h.fail != nil {
		return h.fail(key, call)
	}
	return nil
}

// rig is a store, the fakes, hooks and a River client working both APIs.
type rig[TTx any] struct {
	s      *store[TTx]
	f      *fakes
	h      *hooks[TTx]
	client *river.Client[TTx]
}

func newRig[TTx any](t *testing.T, s *store[TTx], f *fakes, tune func(*river.Config), fail func(string, int64) error) *rig[TTx] {
	for _, ddl := range []string{"CREATE TABLE hook_runs (key text NOT NULL)",
		"CREATE TABLE failures (key text NOT NULL, outcome text NOT NULL, kind text NOT NULL, entity text NOT NULL)"} {
		if err := s.exec(context.Background(), ddl); err != nil {
			t.Fatal(err)
		}
	}
	h := &hooks[TTx]{s: s, fail: fail}
	workers := river.NewWorkers()
	if err := saferiver.AddWorkers(workers, h.config(f)); err != nil {
		t.Fatal(err)
	}
	return &rig[TTx]{s: s, f: f, h: h, client: s.client(t, workers, tune)}
}

// insert inserts an invoice job and a transfer job with their business
// rows in one transaction and returns their keys.
func (r *rig[TTx]) insert(t *testing.T, n int, rollback bool, opts *saferiver.InsertOpts) (invoiceKey, transferKey string) {
	ctx := context.Background()
	r.s.inTx(t, rollback, func(tx TTx) {
		inv, err := saferiver.InsertChiftCreateTx(ctx, r.client, tx, withConnection(invoice(n), r.f.chift.ConnectionID), opts)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := saferiver.InsertTransferCreateTx(ctx, r.client, tx, transfer(n), opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.s.txExec(ctx, tx, "INSERT INTO invoices (request_id) VALUES ($1)", inv.Key); err != nil {
			t.Fatal(err)
		}
		if err := r.s.txExec(ctx, tx, "INSERT INTO payouts (client_transfer_id) VALUES ($1)", tr.Key); err != nil {
			t.Fatal(err)
		}
		invoiceKey, transferKey = inv.Key, tr.Key
	})
	return invoiceKey, transferKey
}

func outputOf(t testing.TB, j *rivertype.JobRow) saferiver.Output {
	var meta struct {
		Output saferiver.Output `json:"output"`
	}
	if err := json.Unmarshal(j.Metadata, &meta); err != nil {
		t.Fatalf("job %d metadata %s: %v", j.ID, j.Metadata, err)
	}
	return meta.Output
}

func keyOf(t testing.TB, j *rivertype.JobRow) string {
	var args struct {
		RequestID        string `json:"request_id"`
		ClientTransferID string `json:"client_transfer_id"`
	}
	if err := json.Unmarshal(j.EncodedArgs, &args); err != nil {
		t.Fatal(err)
	}
	return args.RequestID + args.ClientTransferID
}

func TestWorkersCreateEachOnceThroughFaults(t *testing.T) {
	both(t, testFaults[*sql.Tx], testFaults[pgx.Tx])
}

func testFaults[TTx any](t *testing.T, s *store[TTx]) {
	f := newFakes(t)
	faults := []saferetrytest.Fault{saferetrytest.FaultNone, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultSlowCommit,
		saferetrytest.FaultResetMidBody, saferetrytest.FaultInternalError, saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultBadGateway}
	pick := func(key string, attempt int) saferetrytest.Fault {
		if attempt > 1 {
			return saferetrytest.FaultNone
		}
		return faults[int(key[1])%len(faults)]
	}
	var sent sync.Map // every key a create request carried
	record := func(key string, attempt int) saferetrytest.Fault {
		sent.Store(key, true)
		return pick(key, attempt)
	}
	f.chift.SetFaultFunc(record)
	f.zerohash.SetFaultFunc(record)
	r := newRig(t, s, f, nil, nil)
	committed := map[string]bool{}
	var rolledBack []string
	for i := range 30 {
		a, b := r.insert(t, i, i%5 == 4, nil)
		if i%5 == 4 {
			rolledBack = append(rolledBack, a, b)
			continue
		}
		committed[a], committed[b] = true, true
	}
	r.s.start(t, r.client)
	jobs := waitFinal(t, r.client, len(committed), 60*time.Second)
	for _, j := range jobs {
		key, out := keyOf(t, j), outputOf(t, j)
		if j.State != rivertype.JobStateCompleted || out.Key != key || !committed[key] {
			t.Errorf("job %d %s key %s output %+v errors %v", j.ID, j.State, key, out, j.Errors)
		}
	}
	for key := range committed {
		if f.chift.CreatedWithKey(key)+f.zerohash.CreatedWithClientTransferID(key) != 1 {
			t.Errorf("key %s: %d invoices, %d transfers; want one in all", key, f.chift.CreatedWithKey(key), f.zerohash.CreatedWithClientTransferID(key))
		}
	}
	if got, want := f.chift.Created()+f.zerohash.Created(), len(committed); got != want {
		t.Errorf("%d entities created, want %d", got, want)
	}
	for _, r := range f.chift.Requests() {
		sent.Store(r.Key, true)
	}
	for _, key := range rolledBack {
		if _, ok := sent.Load(key); ok {
			t.Errorf("key %s of a rolled-back insert was sent", key)
		}
	}
	checkRows(t, s, f, committed)
	if runs := s.one(t, "SELECT count(*) FROM hook_runs"); runs != fmt.Sprint(len(committed)) {
		t.Errorf("%s hook runs committed, want %d", runs, len(committed))
	}
}

// checkRows: each business row of a committed key holds the id the fake
// created under that key.
func checkRows[TTx any](t *testing.T, s *store[TTx], f *fakes, committed map[string]bool) {
	rows, err := s.strings(context.Background(), "SELECT request_id, entity_id FROM invoices")
	if err != nil {
		t.Fatal(err)
	}
	payouts, err := s.strings(context.Background(), "SELECT client_transfer_id, transfer_id FROM payouts")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows)+len(payouts) != len(committed) {
		t.Errorf("%d business rows, want %d", len(rows)+len(payouts), len(committed))
	}
	for _, row := range rows {
		inv, ok := f.chift.Entity(row[1])
		if !ok || inv.Key != row[0] {
			t.Errorf("invoice row %s holds %q, which the fake did not create under that key", row[0], row[1])
		}
	}
	for _, row := range payouts {
		tr, err := f.zhC.Transfers.FindByClientTransferID(context.Background(), row[0])
		if err != nil || fmt.Sprint(tr.ID) != row[1] {
			t.Errorf("payout row %s holds %q; the fake holds %+v, %v", row[0], row[1], tr, err)
		}
	}
}

func entityOf(out *saferiver.Output) string {
	if out.TransferID != 0 {
		return fmt.Sprint(out.TransferID)
	}
	return out.EntityID
}
