package saferiver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
)

func TestSQLiteCreatesOnceEachWithFaults(t *testing.T) {
	db, driver := sqliteDB(t)
	f := newFakes(t)
	faults := []saferetrytest.Fault{saferetrytest.FaultNone, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultSlowCommit,
		saferetrytest.FaultResetMidBody, saferetrytest.FaultInternalError, saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultBadGateway}
	f.chift.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault {
		if attempt > 1 {
			return saferetrytest.FaultNone
		}
		return faults[int(key[1])%len(faults)]
	})
	f.zerohash.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault {
		if attempt > 1 {
			return saferetrytest.FaultNone
		}
		return faults[int(id[0])%len(faults)]
	})

	workers := river.NewWorkers()
	err := saferiver.AddWorkers(workers, saferiver.Config[*sql.Tx]{
		Chift: f.chiftC, ZeroHash: f.zhC,
		OnChiftCreated: func(ctx context.Context, tx *sql.Tx, job *river.Job[saferiver.ChiftCreateArgs], c *saferetry.ChiftCreated) error {
			_, err := tx.ExecContext(ctx, `UPDATE invoices SET entity_id = ? WHERE request_id = ?`, c.EntityID, job.Args.RequestID)
			return err
		},
		OnTransferCreated: func(ctx context.Context, tx *sql.Tx, job *river.Job[saferiver.TransferCreateArgs], tr *saferetry.Transfer) error {
			_, err := tx.ExecContext(ctx, `UPDATE payouts SET transfer_id = ? WHERE client_transfer_id = ?`, tr.ID, job.Args.ClientTransferID)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := river.NewClient(driver, riverConfig(workers))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 30
	committed := 0
	for i := range n {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		in := invoice(i)
		in.ConnectionID = f.chift.ConnectionID
		inv, err := saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := saferiver.InsertTransferCreateTx(ctx, client, tx, transfer(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO invoices (request_id) VALUES (?)`, inv.Key); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO payouts (client_transfer_id) VALUES (?)`, tr.Key); err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		committed++
	}
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop(ctx)
	jobs := waitFinal(t, client, 2*committed, 60*time.Second)
	for _, j := range jobs {
		if j.State != rivertype.JobStateCompleted {
			t.Errorf("job %d %s: %v", j.ID, j.State, j.Errors)
		}
		var out saferiver.Output
		if err := json.Unmarshal(j.Metadata, &struct {
			Output *saferiver.Output `json:"output"`
		}{&out}); err != nil || out.Key == "" {
			t.Errorf("job %d output %s: %v", j.ID, j.Metadata, err)
		}
	}
	if got := f.chift.Created(); got != committed {
		t.Errorf("Chift created %d invoices, want %d", got, committed)
	}
	if got := f.zerohash.Created(); got != committed {
		t.Errorf("zerohash created %d transfers, want %d", got, committed)
	}
	rows, err := db.Query(`SELECT request_id, entity_id FROM invoices`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var key string
		var entity sql.NullString
		if err := rows.Scan(&key, &entity); err != nil {
			t.Fatal(err)
		}
		seen++
		if f.chift.CreatedWithKey(key) != 1 || !entity.Valid {
			t.Errorf("invoice %s: %d created, entity %v", key, f.chift.CreatedWithKey(key), entity)
		}
	}
	if seen != committed {
		t.Errorf("%d invoice rows, want %d", seen, committed)
	}
}
