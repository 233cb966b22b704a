package saferiver_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

// A zerohash transfer made durable on an embedded SQLite file: the job
// and the payout row commit together, and a worker writes the transfer's
// id into the row in the transaction that completes the job.
func Example() {
	zerohash := saferetrytest.NewZeroHashServer() // in-process fake of zerohash
	defer zerohash.Close()
	dir, _ := os.MkdirTemp("", "saferiver-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := sqlitedb.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		panic(err)
	}
	defer db.Close()
	driver := riversqlite.New(db)
	if err := saferiver.Migrate(ctx, driver); err != nil {
		panic(err)
	}
	if _, err := db.Exec(`CREATE TABLE payouts (number TEXT PRIMARY KEY, client_transfer_id TEXT NOT NULL, transfer_id INTEGER)`); err != nil {
		panic(err)
	}

	zh, err := saferetry.NewClient(zerohash.URL, saferetry.WithZeroHashAuth(zerohash.APIKey, zerohash.Secret, zerohash.Passphrase))
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	workers := river.NewWorkers()
	err = saferiver.AddWorkers(workers, saferiver.Config[*sql.Tx]{
		ZeroHash: zh,
		OnTransferCreated: func(ctx context.Context, tx *sql.Tx, job *river.Job[saferiver.TransferCreateArgs], t *saferetry.Transfer) error {
			_, err := tx.ExecContext(ctx, `UPDATE payouts SET transfer_id = ? WHERE number = ?`, t.ID, job.Args.Reference)
			return err
		},
	})
	if err != nil {
		panic(err)
	}
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers:           workers,
		FetchPollInterval: 100 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	completed, stop := client.Subscribe(river.EventKindJobCompleted)
	defer stop()
	go func() { <-completed; close(done) }()
	if err := client.Start(ctx); err != nil {
		panic(err)
	}
	defer client.Stop(ctx)

	// The business transaction: the payout row and its transfer's job.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	enq, err := saferiver.InsertTransferCreateTx(ctx, client, tx, saferetry.TransferRequest{
		FromParticipantCode: "DEMO01", FromAccountGroup: "00SCXM",
		ToParticipantCode: "CUST01", ToAccountGroup: "00SCXM",
		Asset: "USD", Amount: "20.10",
	}, &saferiver.InsertOpts{Reference: "PAY-1"})
	if err != nil {
		panic(err) // an invalid transfer: nothing inserted
	}
	if _, err := tx.Exec(`INSERT INTO payouts (number, client_transfer_id) VALUES (?, ?)`, "PAY-1", enq.Key); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	<-done
	var transferID int64
	if err := db.QueryRow(`SELECT transfer_id FROM payouts WHERE number = 'PAY-1'`).Scan(&transferID); err != nil {
		panic(err)
	}
	fmt.Println("payout PAY-1 holds transfer", transferID)
	fmt.Println("transfers under its key:", zerohash.CreatedWithClientTransferID(enq.Key))
	// Output:
	// payout PAY-1 holds transfer 1152000
	// transfers under its key: 1
}
