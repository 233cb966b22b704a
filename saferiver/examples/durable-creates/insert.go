package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/riverqueue/river"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferiver"
)

const (
	chiftAPI    = "chift"
	zerohashAPI = "zerohash"
	// consumerID is the Chift consumer the invoices are for; the fake
	// takes any.
	consumerID = "c0ffee00-0000-4000-8000-000000000001"
)

// entry is one create the application asked for.
type entry struct {
	api       string // chiftAPI or zerohashAPI
	number    string // the business row's: INV-0001, PAY-0002
	key       string // the idempotency key the insert helper assigned
	jobID     int64
	committed bool // false: its transaction was rolled back
}

// ledger is every create of the run, in insert order.
type ledger struct {
	entries []entry
	byJob   map[int64]entry // the committed ones
}

func (l *ledger) committed() []entry { return l.filter(true) }

func (l *ledger) rolledBack() []entry { return l.filter(false) }

func (l *ledger) filter(committed bool) []entry {
	var out []entry
	for _, e := range l.entries {
		if e.committed == committed {
			out = append(out, e)
		}
	}
	return out
}

// rollBackOnPurpose picks the transactions that roll back after their job
// was inserted: the 7th and 8th of every 20, an invoice and a payout.
func rollBackOnPurpose(i int) bool { return i%20 == 6 || i%20 == 7 }

// insertAll runs n transactions, each inserting a create's job and its
// business row: invoices for even i, payouts for odd i.
func insertAll[TTx any](ctx context.Context, out io.Writer, client *river.Client[TTx], db database[TTx], apis *fakes, n int) (*ledger, error) {
	fmt.Fprintf(out, "1. Insert: %d transactions, each writing the job of a create and the business row that holds its key\n", n)
	led := &ledger{byJob: map[int64]entry{}}
	for i := range n {
		e, err := insertOne(ctx, client, db, apis.chift.ConnectionID, i)
		if err != nil {
			return nil, err
		}
		if i < 2 {
			fmt.Fprintf(out, "   %s  job %d  %s\n", e.number, e.jobID, keyName(e))
		}
		led.entries = append(led.entries, e)
		if e.committed {
			led.byJob[e.jobID] = e
		}
	}
	invoices, payouts := count(led.committed())
	fmt.Fprintf(out, "   committed %d: %d invoices for Chift, %d payouts for zerohash\n", invoices+payouts, invoices, payouts)
	var numbers []string
	for _, e := range led.rolledBack() {
		numbers = append(numbers, e.number)
	}
	listed := strings.Join(numbers, ", ")
	if len(numbers) > 6 {
		listed = strings.Join(numbers[:4], ", ") + fmt.Sprintf(" and %d more", len(numbers)-4)
	}
	fmt.Fprintf(out, "   rolled back on purpose after the job's insert: %d (%s); their jobs went with them\n", len(numbers), listed)
	return led, nil
}

func keyName(e entry) string {
	if e.api == chiftAPI {
		return "Chift request id " + e.key + ", in invoices.request_id"
	}
	return "zerohash client_transfer_id " + e.key + ", in payouts.client_transfer_id"
}

func count(entries []entry) (invoices, payouts int) {
	for _, e := range entries {
		if e.api == chiftAPI {
			invoices++
		} else {
			payouts++
		}
	}
	return invoices, payouts
}

// insertOne is the application's side of a durable create: in one
// transaction, the job (whose insert helper assigns the key) and the
// business row that stores the key. Both commit, or neither.
func insertOne[TTx any](ctx context.Context, client *river.Client[TTx], db database[TTx], connectionID string, i int) (entry, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return entry{}, err
	}
	defer db.Rollback(ctx, tx) // after Commit, an error nobody needs
	var e entry
	if i%2 == 0 {
		e, err = insertInvoice(ctx, client, db, tx, connectionID, i+1)
	} else {
		e, err = insertPayout(ctx, client, db, tx, i+1)
	}
	if err != nil {
		return entry{}, err
	}
	if rollBackOnPurpose(i) {
		return e, db.Rollback(ctx, tx)
	}
	if err := db.Commit(ctx, tx); err != nil {
		return entry{}, fmt.Errorf("committing %s: %w", e.number, err)
	}
	e.committed = true
	return e, nil
}

func insertInvoice[TTx any](ctx context.Context, client *river.Client[TTx], db database[TTx], tx TTx, connectionID string, n int) (entry, error) {
	number, total := fmt.Sprintf("INV-%04d", n), fmt.Sprintf("%d.00", 100+n)
	enq, err := saferiver.InsertChiftCreateTx(ctx, client, tx, saferetry.ChiftCreate{
		Path: "consumers/" + consumerID + "/invoicing/invoices",
		Body: map[string]any{"invoice_number": number, "currency": "EUR", "total": total,
			"invoice_type": "customer_invoice", "invoice_date": "2026-01-15"},
		ConsumerID:   consumerID,
		ConnectionID: connectionID,
	}, &saferiver.InsertOpts{Reference: number})
	if err != nil {
		return entry{}, err
	}
	if _, err := db.Exec(ctx, tx, `INSERT INTO invoices (number, total, request_id) VALUES ($1, $2, $3)`, number, total, enq.Key); err != nil {
		return entry{}, fmt.Errorf("inserting invoice %s: %w", number, err)
	}
	return entry{api: chiftAPI, number: number, key: enq.Key, jobID: enq.JobID}, nil
}

func insertPayout[TTx any](ctx context.Context, client *river.Client[TTx], db database[TTx], tx TTx, n int) (entry, error) {
	number, amount := fmt.Sprintf("PAY-%04d", n), fmt.Sprintf("%d.25", 10+n)
	enq, err := saferiver.InsertTransferCreateTx(ctx, client, tx, saferetry.TransferRequest{
		FromParticipantCode: "DEMO01", FromAccountGroup: "00SCXM",
		ToParticipantCode: "CUST01", ToAccountGroup: "00SCXM",
		Asset: "USD", Amount: amount,
	}, &saferiver.InsertOpts{Reference: number})
	if err != nil {
		return entry{}, err
	}
	if _, err := db.Exec(ctx, tx, `INSERT INTO payouts (number, amount, client_transfer_id) VALUES ($1, $2, $3)`, number, amount, enq.Key); err != nil {
		return entry{}, fmt.Errorf("inserting payout %s: %w", number, err)
	}
	return entry{api: zerohashAPI, number: number, key: enq.Key, jobID: enq.JobID}, nil
}
