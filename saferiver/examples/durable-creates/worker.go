package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferiver"
)

// workerEnv, set to a worker's number, makes this program a worker
// process: the parent sets it when it starts one. verboseEnv makes the
// worker log each failed attempt.
const (
	workerEnv  = "DURABLE_CREATES_WORKER"
	verboseEnv = "DURABLE_CREATES_VERBOSE"
)

// workerMain runs a worker process until its stdin closes (the parent's
// way of stopping it) or it is killed.
func workerMain() int {
	if err := runWorker(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", os.Getenv(workerEnv), err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context) error {
	apis, err := endpointsFromEnv()
	if err != nil {
		return err
	}
	if path := os.Getenv(sqliteEnv); path != "" {
		db, err := openSQLite(path)
		if err != nil {
			return err
		}
		defer db.Close()
		return work(ctx, db, apis)
	}
	if url := os.Getenv(databaseURLEnv); url != "" {
		db, err := openPostgres(ctx, url)
		if err != nil {
			return err
		}
		defer db.Close()
		return work(ctx, db, apis)
	}
	return errors.New(sqliteEnv + " or " + databaseURLEnv + " must be set: a worker is started by durable-creates itself")
}

func work[TTx any](ctx context.Context, db database[TTx], apis endpoints) error {
	workers, err := newWorkers(db, apis)
	if err != nil {
		return err
	}
	client, err := river.NewClient(db.Driver(), workerConfig(workers, workerLogger()))
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it, or dies
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return client.Stop(stopCtx)
}

func workerLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv(verboseEnv) != "" {
		level = slog.LevelInfo // River logs a failed attempt at Info
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", os.Getenv(workerEnv))
}

// workerConfig is River's configuration for a worker process, with
// settings short enough that a killed worker's jobs run again within
// seconds of River's leader lease, instead of River's default hour.
func workerConfig(workers *river.Workers, logger *slog.Logger) *river.Config {
	return &river.Config{
		// Four creates at once per worker process.
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers: workers,
		Logger:  logger,
		// JobTimeout bounds one attempt of a job: the Create with its own
		// retries and lookups, then the transaction that completes the
		// job. An attempt cut short fails, and the next one resumes the
		// create under the same key. The fakes answer within a second or
		// two; against the real APIs give a few minutes (Chift.Create may
		// poll Chift's log for up to two). Keep a timeout: with -1 (none)
		// River's rescuer never takes a dead worker's job.
		JobTimeout: 5 * time.Second,
		// RescueStuckJobsAfter: a job still running this long after its
		// attempt began is taken for a dead worker's, and River's rescuer
		// makes it retryable, to run again under the same key. River
		// refuses a value below JobTimeout: a live worker's job would be
		// run twice at once (harmless for the create, which has one key,
		// but wasted). The rescuer runs on River's leader, at once when a
		// client becomes leader and every 30 s after; a worker that
		// replaces a dead leader becomes leader once the dead one's lease
		// lapses (River's is 15 s), so here the dead worker's jobs run
		// again 15 to 25 s after the kill.
		RescueStuckJobsAfter: 6 * time.Second,
		// FetchPollInterval is how often a worker looks for jobs when no
		// notification says there are some. SQLite has no LISTEN/NOTIFY:
		// polling is how a worker sees inserted and rescued jobs there.
		// River's default is 1 s; FetchCooldown, the least time between
		// two fetches, must not exceed it.
		FetchPollInterval: 100 * time.Millisecond,
		FetchCooldown:     20 * time.Millisecond,
		// RetryPolicy: River's default waits about attempt⁴ seconds (1 s,
		// 16 s, 81 s...); quickRetries keeps a demo short. A retry is
		// safe whatever the wait: it carries the same key.
		RetryPolicy: quickRetries{},
	}
}

// quickRetries retries a failed job after 100 ms times its attempt.
type quickRetries struct{}

func (quickRetries) NextRetry(job *rivertype.JobRow) time.Time {
	return time.Now().Add(time.Duration(job.Attempt) * 100 * time.Millisecond)
}

// newWorkers registers saferiver's two workers, with hooks that write the
// entity's id into the business row in the transaction that completes
// the job: the row and the job's completion commit together.
func newWorkers[TTx any](db database[TTx], apis endpoints) (*river.Workers, error) {
	chift, zerohash, err := apis.clients()
	if err != nil {
		return nil, err
	}
	workers := river.NewWorkers()
	err = saferiver.AddWorkers(workers, saferiver.Config[TTx]{
		Chift:    chift,
		ZeroHash: zerohash,
		OnChiftCreated: func(ctx context.Context, tx TTx, job *river.Job[saferiver.ChiftCreateArgs], created *saferetry.ChiftCreated) error {
			return updateRow(ctx, db, tx, `UPDATE invoices SET entity_id = $1 WHERE request_id = $2`, created.EntityID, job.Args.RequestID)
		},
		OnTransferCreated: func(ctx context.Context, tx TTx, job *river.Job[saferiver.TransferCreateArgs], transfer *saferetry.Transfer) error {
			return updateRow(ctx, db, tx, `UPDATE payouts SET transfer_id = $1 WHERE client_transfer_id = $2`, transfer.ID, job.Args.ClientTransferID)
		},
	})
	return workers, err
}

// updateRow writes an entity's id into the one row holding key: no row
// would mean a job without its business record, which is a bug worth an
// error (the job is then retried, and the row stays empty until fixed).
func updateRow[TTx any](ctx context.Context, db database[TTx], tx TTx, query string, id any, key string) error {
	n, err := db.Exec(ctx, tx, query, id, key)
	if err == nil && n != 1 {
		err = fmt.Errorf("%d rows hold key %s, want 1", n, key)
	}
	return err
}
