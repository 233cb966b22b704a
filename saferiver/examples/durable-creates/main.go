// Command durable-creates shows saferiver, the durable layer on River,
// finishing every create exactly once although the process sending them is
// killed mid-flight.
//
// With no flags it uses an embedded SQLite file in a temporary directory
// and starts saferetrytest's in-process fakes of Chift and zerohash on
// loopback, which fault about 30 % of the first POSTs (seeded by -seed):
// the connection dropped before or after the entity is created, a commit
// slower than the attempt timeout, an answer cut off mid-body, 500, 502.
// Then it
//
//  1. inserts -n creates, half Chift invoices and half zerohash payouts,
//     each in a database transaction with its business row (invoices,
//     payouts) holding the idempotency key; a few transactions are rolled
//     back on purpose after the insert, taking their job with them;
//  2. starts a worker process (this program again, told by the environment
//     where the database and the fakes are) and kills it with SIGKILL once
//     the job table shows some creates completed and others still running;
//  3. starts a new worker process, which takes over the dead one's jobs
//     once River rescues them, and waits until every job is final;
//  4. checks, from the fakes' own records, that every committed create
//     exists exactly once, that the rolled-back ones were never sent, and
//     that every business row holds its entity or transfer id.
//
// It exits 1 if any check fails, so the program is also a check. It needs
// no network and no environment.
//
// With -database-url it runs the same on PostgreSQL, in a schema of its
// own (-schema, dropped and created again on every run).
//
//	go -C saferiver run ./examples/durable-creates
//	go -C saferiver run ./examples/durable-creates -n 100 -seed 7
//	go -C saferiver run ./examples/durable-creates -database-url 'postgres://user:pass@localhost:5432/db?sslmode=disable'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/riverqueue/river"
)

// options are the flags of a run.
type options struct {
	creates     int    // transactions, half invoices and half payouts
	seed        uint64 // of the fakes' faults
	dbPath      string // the SQLite file; "" for one in a temporary directory
	databaseURL string // PostgreSQL instead of SQLite when set
	schema      string // PostgreSQL schema the run owns
	verbose     bool   // pass the worker processes' logs through
	out         io.Writer
}

const (
	defaultCreates = 40
	maxCreates     = 2000 // the job table is listed in one page of River's JobList
	defaultSchema  = "saferiver_example"
)

func main() {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	opts := options{out: os.Stdout}
	flag.IntVar(&opts.creates, "n", defaultCreates, "creates to insert, half Chift invoices and half zerohash payouts")
	flag.Uint64Var(&opts.seed, "seed", 1, "seed of the fakes' faults")
	flag.StringVar(&opts.dbPath, "db", "", "SQLite file to create (default: one in a temporary directory, removed at the end)")
	flag.StringVar(&opts.databaseURL, "database-url", "", "run on PostgreSQL instead, e.g. postgres://user:pass@localhost:5432/db?sslmode=disable")
	flag.StringVar(&opts.schema, "schema", defaultSchema, "with -database-url: the schema to use, DROPPED and created again on every run")
	flag.BoolVar(&opts.verbose, "v", false, "show the worker processes' logs")
	flag.Parse()
	if err := run(context.Background(), opts); err != nil {
		fmt.Fprintln(os.Stderr, "durable-creates:", err)
		os.Exit(1)
	}
}

// run is the whole program but flag parsing: it returns an error when a
// check fails.
func run(ctx context.Context, opts options) error {
	if opts.out == nil {
		opts.out = io.Discard
	}
	if opts.creates < 2 || opts.creates > maxCreates {
		return fmt.Errorf("-n is %d; it must be 2 to %d", opts.creates, maxCreates)
	}
	apis := startFakes()
	defer apis.close()
	if opts.databaseURL != "" {
		if !schemaName.MatchString(opts.schema) {
			return fmt.Errorf("-schema %q: use lower-case letters, digits and underscores, starting with a letter", opts.schema)
		}
		db, err := createPostgres(ctx, opts.databaseURL, opts.schema)
		if err != nil {
			return err
		}
		defer db.Close()
		return demo(ctx, opts, apis, db)
	}
	path := opts.dbPath
	if path == "" {
		dir, err := os.MkdirTemp("", "durable-creates-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "app.db")
	}
	db, err := createSQLite(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	return demo(ctx, opts, apis, db)
}

var schemaName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// demo runs the four phases on one database.
func demo[TTx any](ctx context.Context, opts options, apis *fakes, db database[TTx]) error {
	out := opts.out
	fmt.Fprintf(out, "durable-creates: %d creates through River on %s; Chift and zerohash fakes on loopback; seed %d\n\n",
		opts.creates, db.Describe(), opts.seed)

	// The application's own River client only inserts: it has no queues,
	// so it never works a job. Workers are given so that River refuses a
	// job kind no worker knows.
	workers, err := newWorkers(db, apis.endpoints())
	if err != nil {
		return err
	}
	client, err := river.NewClient(db.Driver(), &river.Config{Workers: workers})
	if err != nil {
		return err
	}
	led, err := insertAll(ctx, out, client, db, apis, opts.creates)
	if err != nil {
		return err
	}
	apis.fault(out, led, opts.seed)

	spawn := func(n int) (*workerProcess, error) {
		return startWorker(n, append(db.WorkerEnv(), apis.endpoints().env()...), opts.verbose)
	}
	first, err := spawn(1)
	if err != nil {
		return err
	}
	defer first.end()
	killed, err := killMidFlight(ctx, out, client, apis, led, first)
	if err != nil {
		return err
	}
	second, err := spawn(2)
	if err != nil {
		return err
	}
	defer second.end()
	final, waitErr := waitFinal(ctx, out, client, led, killed, second)
	if err := second.stop(10 * time.Second); err != nil {
		waitErr = errors.Join(waitErr, err)
	}
	if waitErr != nil {
		return waitErr
	}
	return check(ctx, out, apis, db, led, final)
}
