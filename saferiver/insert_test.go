package saferiver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferiver"
)

func TestInsertRefusesBadInputAndInsertsNothing(t *testing.T) {
	both(t, testInsertRefuses[*sql.Tx], testInsertRefuses[pgx.Tx])
}

func testInsertRefuses[TTx any](t *testing.T, s *store[TTx]) {
	client := s.client(t, river.NewWorkers(), func(c *river.Config) { c.Queues = nil; c.Workers = nil })
	ctx := context.Background()
	goodInvoice := invoice(1)
	goodInvoice.ConnectionID = "conn"
	for _, tc := range []struct {
		name   string
		insert func(tx TTx) error
		want   func(error) bool
	}{
		{"transfer with a negative amount and no asset", func(tx TTx) error {
			req := transfer(1)
			req.Amount, req.Asset = "-1", ""
			_, err := saferiver.InsertTransferCreateTx(ctx, client, tx, req, nil)
			return err
		}, func(err error) bool {
			return strings.Contains(err.Error(), "invalid transfer request") && strings.Contains(err.Error(), "Amount") &&
				strings.Contains(err.Error(), "Asset") && strings.Contains(err.Error(), "nothing inserted")
		}},
		{"invoice whose body is a string", func(tx TTx) error {
			in := goodInvoice
			in.Body = "{}"
			_, err := saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil)
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "Body is a string") }},
		{"invoice without a connection id", func(tx TTx) error {
			in := goodInvoice
			in.ConnectionID = ""
			_, err := saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil)
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "ConnectionID") }},
		{"invoice with a key padded by spaces", func(tx TTx) error {
			in := goodInvoice
			in.RequestID = " k "
			_, err := saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil)
			return err
		}, func(err error) bool { return errors.Is(err, saferetry.ErrInvalidKey) }},
		{"transfer with FirstSentAt", func(tx TTx) error {
			req := transfer(1)
			req.ClientTransferID, req.FirstSentAt = "k1", time.Now().Add(-time.Hour)
			_, err := saferiver.InsertTransferCreateTx(ctx, client, tx, req, nil)
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "FirstSentAt is set") }},
		{"invoice with FirstSentAt", func(tx TTx) error {
			in := goodInvoice
			in.FirstSentAt = time.Now()
			_, err := saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil)
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "FirstSentAt is set") }},
		{"River unique options", func(tx TTx) error {
			_, err := saferiver.InsertTransferCreateTx(ctx, client, tx, transfer(1),
				&saferiver.InsertOpts{River: river.InsertOpts{UniqueOpts: river.UniqueOpts{ByQueue: true}}})
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "UniqueOpts is set") }},
		{"a nil River client", func(tx TTx) error {
			_, err := saferiver.InsertTransferCreateTx(ctx, (*river.Client[TTx])(nil), tx, transfer(1), nil)
			return err
		}, func(err error) bool { return strings.Contains(err.Error(), "River client is nil") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.inTx(t, false, func(tx TTx) {
				err := tc.insert(tx)
				if err == nil || !tc.want(err) {
					t.Fatalf("err = %v", err)
				}
			})
			if n := s.countJobs(t); n != "0" {
				t.Fatalf("%s jobs inserted, want 0", n)
			}
		})
	}
}

func TestInsertAssignsTheKeyAndIsUniqueByIt(t *testing.T) {
	both(t, testInsertUnique[*sql.Tx], testInsertUnique[pgx.Tx])
}

func testInsertUnique[TTx any](t *testing.T, s *store[TTx]) {
	client := s.client(t, river.NewWorkers(), func(c *river.Config) { c.Queues = nil; c.Workers = nil })
	ctx := context.Background()
	var first *saferiver.Enqueued
	s.inTx(t, false, func(tx TTx) {
		var err error
		first, err = saferiver.InsertTransferCreateTx(ctx, client, tx, transfer(1), &saferiver.InsertOpts{Reference: "payout-1"})
		if err != nil {
			t.Fatal(err)
		}
	})
	if first.Key == "" || first.Existing {
		t.Fatalf("first insert = %+v", first)
	}
	job, err := client.JobGet(ctx, first.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var args saferiver.TransferCreateArgs
	if err := json.Unmarshal(job.EncodedArgs, &args); err != nil || args.ClientTransferID != first.Key ||
		args.Transfer.ClientTransferID != first.Key || args.Reference != "payout-1" || job.Kind != saferiver.TransferCreateKind {
		t.Fatalf("job %s args %s: want the key %s", job.Kind, job.EncodedArgs, first.Key)
	}

	same := transfer(1)
	same.ClientTransferID = first.Key
	s.inTx(t, false, func(tx TTx) {
		again, err := saferiver.InsertTransferCreateTx(ctx, client, tx, same, &saferiver.InsertOpts{Reference: "payout-1"})
		if err != nil || !again.Existing || again.JobID != first.JobID || again.Key != first.Key || again.State != rivertype.JobStateAvailable {
			t.Fatalf("same transfer again = %+v, %v; want job %d, Existing", again, err, first.JobID)
		}
	})
	other := same
	other.Amount = "999"
	for name, insert := range map[string]func(tx TTx) error{
		"another amount": func(tx TTx) error {
			_, err := saferiver.InsertTransferCreateTx(ctx, client, tx, other, &saferiver.InsertOpts{Reference: "payout-1"})
			return err
		},
		"another reference": func(tx TTx) error {
			_, err := saferiver.InsertTransferCreateTx(ctx, client, tx, same, &saferiver.InsertOpts{Reference: "payout-2"})
			return err
		},
	} {
		s.inTx(t, false, func(tx TTx) {
			var inUse *saferiver.KeyInUseError
			if err := insert(tx); !errors.As(err, &inUse) || inUse.JobID != first.JobID || inUse.Key != first.Key || inUse.State != rivertype.JobStateAvailable {
				t.Fatalf("%s: err = %v, want a KeyInUseError naming job %d", name, err, first.JobID)
			}
		})
	}
	if n := s.countJobs(t); n != "1" {
		t.Fatalf("%s jobs, want 1", n)
	}

	// A Chift create whose body Postgres's jsonb would rewrite (key order,
	// 1e2, 1.50): kept as sent, and the same insert again is the same job.
	raw := `{"z": 1e2, "a": {"y": 2, "b": 1.50}, "invoice_number": "INV-9"}`
	chift := saferetry.ChiftCreate{Path: "consumers/" + consumer + "/invoicing/invoices", Body: json.RawMessage(raw),
		ConsumerID: consumer, ConnectionID: "conn", RequestID: "chosen-request-id"}
	var firstChift *saferiver.Enqueued
	for i := range 2 {
		s.inTx(t, false, func(tx TTx) {
			e, err := saferiver.InsertChiftCreateTx(ctx, client, tx, chift, &saferiver.InsertOpts{Reference: "INV-9"})
			if err != nil || e.Key != chift.RequestID || e.Existing != (i == 1) || (i == 1 && e.JobID != firstChift.JobID) {
				t.Fatalf("Chift insert %d = %+v, %v", i, e, err)
			}
			firstChift = e
		})
	}
	job, err = client.JobGet(ctx, firstChift.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var chiftArgs saferiver.ChiftCreateArgs
	if err := json.Unmarshal(job.EncodedArgs, &chiftArgs); err != nil || chiftArgs.Body != raw {
		t.Fatalf("stored body %q, %v; want the bytes given, %q", chiftArgs.Body, err, raw)
	}

	var rolledBack *saferiver.Enqueued
	s.inTx(t, true, func(tx TTx) {
		var err error
		if rolledBack, err = saferiver.InsertChiftCreateTx(ctx, client, tx, withConnection(invoice(2), "conn"), nil); err != nil {
			t.Fatal(err)
		}
	})
	if n := s.countJobs(t); n != "2" {
		t.Fatalf("%s jobs after a rolled-back insert, want 2", n)
	}
	if _, err := client.JobGet(ctx, rolledBack.JobID); !errors.Is(err, rivertype.ErrNotFound) {
		t.Fatalf("the rolled-back job: %v, want not found", err)
	}
}

func withConnection(in saferetry.ChiftCreate, conn string) saferetry.ChiftCreate {
	in.ConnectionID = conn
	return in
}
