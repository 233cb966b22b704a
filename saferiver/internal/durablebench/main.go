// Command durablebench measures the durable layer, for BENCHMARKS.md:
//
//   - throughput: jobs per second that 1, 2 and 3 worker processes
//     (internal/fleetworker) finish from one database, SQLite and
//     Postgres, against the in-process fakes without faults. The rate is
//     read from the database, jobs over the span from the first attempt
//     to the last completion, so process start-up is not counted.
//   - cost: a durable create (insert in a transaction beside a business
//     row, then worked by a River client in this process) against a
//     direct Transfers.Create, the same number of each at the same
//     concurrency, in paired rounds; the figure is the median of the
//     per-round ratios.
//
// Rounds interleave the configurations, so that a slow moment of the
// machine falls on all of them alike.
//
//	go -C saferiver run ./internal/durablebench
//	go -C saferiver run ./internal/durablebench -database-url 'postgres://saferiver:saferiver@localhost:5432/saferiver?sslmode=disable' -rounds 5
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

func main() {
	dbURL := flag.String("database-url", "", "a Postgres URL to measure Postgres as well (default: SQLite only)")
	rounds := flag.Int("rounds", 5, "rounds of each measurement")
	jobs := flag.Int("jobs", 1000, "jobs per throughput run")
	creates := flag.Int("creates", 300, "creates per cost run")
	concurrency := flag.Int("concurrency", 8, "creates at once: goroutines of the direct run, River workers of the durable one and of each process")
	procs := flag.String("procs", "1,2,3", "worker process counts of the throughput runs")
	skip := flag.String("skip", "", "comma-separated parts to skip: throughput, cost")
	flag.Parse()
	b := &bench{dbURL: *dbURL, rounds: *rounds, jobs: *jobs, creates: *creates, concurrency: *concurrency}
	for _, p := range strings.Split(*procs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			fatal(fmt.Errorf("-procs %q: want positive counts", *procs))
		}
		b.procs = append(b.procs, n)
	}
	if err := b.run(strings.Split(*skip, ",")); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "durablebench:", err)
	os.Exit(1)
}

type bench struct {
	dbURL                 string
	rounds, jobs, creates int
	concurrency           int
	procs                 []int
	dir, worker           string
	chift                 *saferetrytest.ChiftServer
	zerohash              *saferetrytest.ZeroHashServer
	schemaSeq             atomic.Int64
}

func (b *bench) run(skip []string) error {
	var err error
	if b.dir, err = os.MkdirTemp("", "durablebench"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	fmt.Printf("durablebench: %d round(s); fakes without faults, in this process\n", b.rounds)
	if !slices.Contains(skip, "throughput") {
		if err := b.throughput(); err != nil {
			return err
		}
	}
	if !slices.Contains(skip, "cost") {
		if err := b.cost(); err != nil {
			return err
		}
	}
	return nil
}

// fakes starts fresh fakes, so that every run starts from empty servers.
func (b *bench) fakes() func() {
	b.chift, b.zerohash = saferetrytest.NewChiftServer(), saferetrytest.NewZeroHashServer()
	return func() { b.chift.Close(); b.zerohash.Close() }
}

// ---- throughput: worker processes ----

func (b *bench) throughput() error {
	b.worker = filepath.Join(b.dir, "fleetworker")
	build := exec.Command("go", "build", "-o", b.worker, "./internal/fleetworker")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the worker: %w", err)
	}
	dbs := []string{"sqlite"}
	if b.dbURL != "" {
		dbs = append(dbs, "postgres")
	}
	rates := map[string][]float64{}
	for r := range b.rounds {
		for _, db := range dbs {
			for i := range b.procs {
				n := b.procs[(i+r)%len(b.procs)] // rotate the order each round
				rate, err := b.throughputRun(db, n)
				if err != nil {
					return fmt.Errorf("%s, %d process(es): %w", db, n, err)
				}
				name := fmt.Sprintf("%s/%d", db, n)
				rates[name] = append(rates[name], rate)
			}
		}
	}
	fmt.Printf("\nthroughput: %d jobs (half Chift invoices, half zerohash transfers), %d River workers per process\n", b.jobs, b.concurrency)
	fmt.Printf("%-10s %-9s %12s %12s %12s\n", "database", "processes", "median job/s", "min", "max")
	for _, db := range dbs {
		for _, n := range b.procs {
			xs := rates[fmt.Sprintf("%s/%d", db, n)]
			slices.Sort(xs)
			fmt.Printf("%-10s %-9d %12.0f %12.0f %12.0f\n", db, n, median(xs), xs[0], xs[len(xs)-1])
		}
	}
	return nil
}

func (b *bench) throughputRun(db string, procs int) (float64, error) {
	stop := b.fakes()
	defer stop()
	ctx := context.Background()
	s, err := b.open(ctx, db)
	if err != nil {
		return 0, err
	}
	defer s.close()
	if err := s.insert(ctx, b, b.jobs); err != nil {
		return 0, err
	}
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	for i := range procs {
		c := exec.Command(b.worker, "-db", s.url, "-id", fmt.Sprintf("bench-%d", i), "-max-workers", strconv.Itoa(b.concurrency),
			"-chift-url", b.chift.URL, "-zerohash-url", b.zerohash.URL, "-job-timeout", "30s", "-rescue-after", "60s", "-attempt-timeout", "5s")
		c.Env = append(os.Environ(), "FLEETWORKER_ZEROHASH_API_KEY="+b.zerohash.APIKey, "FLEETWORKER_ZEROHASH_SECRET="+b.zerohash.Secret,
			"FLEETWORKER_ZEROHASH_PASSPHRASE="+b.zerohash.Passphrase)
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			return 0, err
		}
		cmds = append(cmds, c)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done, err := s.count(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'")
		if err != nil {
			return 0, err
		}
		if done == int64(b.jobs) {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d jobs completed after 5 minutes", done, b.jobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := b.chift.Created() + b.zerohash.Created(); got != b.jobs {
		return 0, fmt.Errorf("the fakes created %d entities for %d jobs", got, b.jobs)
	}
	span, err := s.span(ctx)
	if err != nil {
		return 0, err
	}
	return float64(b.jobs) / span.Seconds(), nil
}

// ---- cost: durable against direct ----

func (b *bench) cost() error {
	dbs := []string{"sqlite"}
	if b.dbURL != "" {
		dbs = append(dbs, "postgres")
	}
	ratios, rates := map[string][]float64{}, map[string][]float64{}
	for range b.rounds {
		direct, err := b.directRun()
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		rates["direct"] = append(rates["direct"], direct)
		for _, db := range dbs {
			durable, err := b.durableRun(db)
			if err != nil {
				return fmt.Errorf("durable on %s: %w", db, err)
			}
			rates[db] = append(rates[db], durable)
			ratios[db] = append(ratios[db], direct/durable)
		}
	}
	fmt.Printf("\ncost: %d zerohash transfers per run, %d at once; durable = insert in a transaction beside a business row, then worked by River in this process\n", b.creates, b.concurrency)
	fmt.Printf("%-18s %14s %24s\n", "path", "median create/s", "time per create vs direct")
	slices.Sort(rates["direct"])
	fmt.Printf("%-18s %14.0f %24s\n", "direct", median(rates["direct"]), "1")
	for _, db := range dbs {
		xs, rs := rates[db], ratios[db]
		slices.Sort(xs)
		slices.Sort(rs)
		fmt.Printf("%-18s %14.0f %14.2fx (%.2f-%.2f)\n", "durable, "+db, median(xs), median(rs), rs[0], rs[len(rs)-1])
	}
	return nil
}

func (b *bench) directRun() (float64, error) {
	stop := b.fakes()
	defer stop()
	client, err := b.zerohashClient()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	errs, wait := spread(b.creates, b.concurrency, func(i int) error {
		_, err := client.Transfers.Create(context.Background(), transferRequest(i))
		return err
	})
	wait()
	elapsed := time.Since(start)
	if err := <-errs; err != nil {
		return 0, err
	}
	if b.zerohash.Created() != b.creates {
		return 0, fmt.Errorf("%d transfers for %d creates", b.zerohash.Created(), b.creates)
	}
	return float64(b.creates) / elapsed.Seconds(), nil
}

func (b *bench) durableRun(db string) (float64, error) {
	stop := b.fakes()
	defer stop()
	ctx := context.Background()
	s, err := b.open(ctx, db)
	if err != nil {
		return 0, err
	}
	defer s.close()
	client, err := b.zerohashClient()
	if err != nil {
		return 0, err
	}
	return s.durable(ctx, b, client)
}

func (b *bench) zerohashClient() (*saferetry.Client, error) {
	return saferetry.NewClient(b.zerohash.URL, saferetry.WithZeroHashAuth(b.zerohash.APIKey, b.zerohash.Secret, b.zerohash.Passphrase))
}

// spread calls f(1) to f(n) from c goroutines. Each goroutine stops at
// its first error and sends it on errs, which wait closes once all have
// returned: after wait, a receive gives the first error, or nil.
func spread(n, c int, f func(i int) error) (errs <-chan error, wait func()) {
	ch := make(chan error, c)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				if err := f(i); err != nil {
					ch <- err
					return
				}
			}
		})
	}
	return ch, func() { wg.Wait(); close(ch) }
}

func transferRequest(i int) saferetry.TransferRequest {
	return saferetry.TransferRequest{FromParticipantCode: "DEMO01", FromAccountGroup: "00SCXM", ToParticipantCode: "CUST01",
		ToAccountGroup: "00SCXM", Asset: "USD", Amount: fmt.Sprintf("%d.5", i)}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// ---- databases ----

// store is one fresh database: a SQLite file or a Postgres schema.
type store interface {
	// insert inserts n jobs, half invoices and half transfers, each in
	// its own transaction beside its business row.
	insert(ctx context.Context, b *bench, n int) error
	// durable inserts b.creates transfers from b.concurrency goroutines
	// while a River client in this process works them, and returns the
	// creates per second from the first insert to the last completion.
	durable(ctx context.Context, b *bench, client *saferetry.Client) (float64, error)
	count(ctx context.Context, q string) (int64, error)
	// span is the time from the first attempt to the last completion.
	span(ctx context.Context) (time.Duration, error)
	close()
	urlOf() string
}

type dbStore[TTx any] struct {
	url      string
	driver   riverdriver.Driver[TTx]
	begin    func(context.Context) (TTx, error)
	commit   func(context.Context, TTx) error
	rollback func(context.Context, TTx) error
	exec     func(ctx context.Context, tx TTx, q string, args ...any) error
	queryInt func(ctx context.Context, q string) (int64, error)
	spanSQL  string
	closeFn  func()
}

func (b *bench) open(ctx context.Context, db string) (*storeHandle, error) {
	if db == "sqlite" {
		path := filepath.Join(b.dir, fmt.Sprintf("jobs-%d.db", b.schemaSeq.Add(1)))
		sq, err := sqlitedb.Open(path)
		if err != nil {
			return nil, err
		}
		s := &dbStore[*sql.Tx]{url: path, driver: riversqlite.New(sq),
			begin:    func(ctx context.Context) (*sql.Tx, error) { return sq.BeginTx(ctx, nil) },
			commit:   func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
			rollback: func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() },
			exec: func(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
				_, err := tx.ExecContext(ctx, q, args...)
				return err
			},
			queryInt: func(ctx context.Context, q string) (n int64, err error) {
				err = sq.QueryRowContext(ctx, q).Scan(&n)
				return n, err
			},
			spanSQL: "SELECT CAST((julianday(max(finalized_at)) - julianday(min(attempted_at))) * 86400000000 AS INTEGER) FROM river_job",
			closeFn: func() { sq.Close(); os.Remove(path) },
		}
		return &storeHandle{store: s, url: path}, s.setUp(ctx)
	}
	admin, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", b.dbURL, err)
	}
	schema := fmt.Sprintf("durablebench_%d_%d", os.Getpid(), b.schemaSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close(ctx)
		return nil, err
	}
	sep := "?"
	if strings.Contains(b.dbURL, "?") {
		sep = "&"
	}
	url := b.dbURL + sep + "search_path=" + schema
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		admin.Close(ctx)
		return nil, err
	}
	s := &dbStore[pgx.Tx]{url: url, driver: riverpgxv5.New(pool),
		begin:    pool.Begin,
		commit:   func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
		rollback: func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) },
		exec: func(ctx context.Context, tx pgx.Tx, q string, args ...any) error {
			_, err := tx.Exec(ctx, q, args...)
			return err
		},
		queryInt: func(ctx context.Context, q string) (n int64, err error) {
			err = pool.QueryRow(ctx, q).Scan(&n)
			return n, err
		},
		spanSQL: "SELECT (extract(epoch FROM max(finalized_at) - min(attempted_at)) * 1000000)::bigint FROM river_job",
		closeFn: func() {
			pool.Close()
			_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			admin.Close(context.Background())
		},
	}
	return &storeHandle{store: s, url: url}, s.setUp(ctx)
}

// storeHandle hides the transaction type.
type storeHandle struct {
	store
	url string
}

func (s *dbStore[TTx]) urlOf() string { return s.url }
func (s *dbStore[TTx]) close()        { s.closeFn() }

func (s *dbStore[TTx]) count(ctx context.Context, q string) (int64, error) { return s.queryInt(ctx, q) }

func (s *dbStore[TTx]) span(ctx context.Context) (time.Duration, error) {
	us, err := s.queryInt(ctx, s.spanSQL)
	if err != nil {
		return 0, err
	}
	if us <= 0 {
		return 0, errors.New("no span between the first attempt and the last completion")
	}
	return time.Duration(us) * time.Microsecond, nil
}

func (s *dbStore[TTx]) setUp(ctx context.Context) error {
	if err := saferiver.Migrate(ctx, s.driver); err != nil {
		return err
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	for _, ddl := range []string{
		"CREATE TABLE invoices (request_id text PRIMARY KEY, entity_id text)",
		"CREATE TABLE payouts (client_transfer_id text PRIMARY KEY, transfer_id bigint)",
	} {
		if err := s.exec(ctx, tx, ddl); err != nil {
			return err
		}
	}
	return s.commit(ctx, tx)
}

// inserter is a River client that only inserts.
func (s *dbStore[TTx]) inserter(workers *river.Workers) (*river.Client[TTx], error) {
	if workers == nil {
		workers = river.NewWorkers()
		if err := river.AddWorkerSafely(workers, river.WorkFunc(func(context.Context, *river.Job[saferiver.ChiftCreateArgs]) error { return nil })); err != nil {
			return nil, err
		}
		if err := river.AddWorkerSafely(workers, river.WorkFunc(func(context.Context, *river.Job[saferiver.TransferCreateArgs]) error { return nil })); err != nil {
			return nil, err
		}
	}
	return river.NewClient(s.driver, &river.Config{Workers: workers})
}

func (s *dbStore[TTx]) insert(ctx context.Context, b *bench, n int) error {
	client, err := s.inserter(nil)
	if err != nil {
		return err
	}
	for i := range n {
		tx, err := s.begin(ctx)
		if err != nil {
			return err
		}
		if i%2 == 0 {
			in := saferetry.ChiftCreate{Path: "consumers/bench/invoicing/invoices", Body: map[string]any{"invoice_number": fmt.Sprintf("B-%d", i)},
				ConsumerID: "bench", ConnectionID: b.chift.ConnectionID}
			var e *saferiver.Enqueued
			if e, err = saferiver.InsertChiftCreateTx(ctx, client, tx, in, nil); err == nil {
				err = s.exec(ctx, tx, "INSERT INTO invoices (request_id) VALUES ($1)", e.Key)
			}
		} else {
			var e *saferiver.Enqueued
			if e, err = saferiver.InsertTransferCreateTx(ctx, client, tx, transferRequest(i), nil); err == nil {
				err = s.exec(ctx, tx, "INSERT INTO payouts (client_transfer_id) VALUES ($1)", e.Key)
			}
		}
		if err != nil {
			_ = s.rollback(ctx, tx)
			return err
		}
		if err := s.commit(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

func (s *dbStore[TTx]) durable(ctx context.Context, b *bench, zh *saferetry.Client) (float64, error) {
	workers := river.NewWorkers()
	err := saferiver.AddWorkers(workers, saferiver.Config[TTx]{ZeroHash: zh,
		OnTransferCreated: func(ctx context.Context, tx TTx, job *river.Job[saferiver.TransferCreateArgs], t *saferetry.Transfer) error {
			return s.exec(ctx, tx, "UPDATE payouts SET transfer_id = $1 WHERE client_transfer_id = $2", t.ID, job.Args.ClientTransferID)
		}})
	if err != nil {
		return 0, err
	}
	client, err := river.NewClient(s.driver, &river.Config{Workers: workers,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: b.concurrency}},
		FetchPollInterval: 10 * time.Millisecond, FetchCooldown: time.Millisecond})
	if err != nil {
		return 0, err
	}
	done, cancel := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer func() { _ = client.Stop(context.Background()) }()
	start := time.Now()
	errs, wait := spread(b.creates, b.concurrency, func(i int) error { return s.insertTransfer(ctx, client, i) })
	completed := 0
	timeout := time.After(5 * time.Minute)
	for completed < b.creates {
		select {
		case ev := <-done:
			if ev.Kind != river.EventKindJobCompleted {
				return 0, fmt.Errorf("job %d %s: %v", ev.Job.ID, ev.Kind, ev.Job.Errors)
			}
			completed++
		case err := <-errs:
			return 0, err
		case <-timeout:
			return 0, fmt.Errorf("%d of %d jobs completed after 5 minutes", completed, b.creates)
		}
	}
	elapsed := time.Since(start)
	wait()
	if b.zerohash.Created() != b.creates {
		return 0, fmt.Errorf("%d transfers for %d creates", b.zerohash.Created(), b.creates)
	}
	return float64(b.creates) / elapsed.Seconds(), nil
}

func (s *dbStore[TTx]) insertTransfer(ctx context.Context, client *river.Client[TTx], i int) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	e, err := saferiver.InsertTransferCreateTx(ctx, client, tx, transferRequest(i), nil)
	if err == nil {
		err = s.exec(ctx, tx, "INSERT INTO payouts (client_transfer_id) VALUES ($1)", e.Key)
	}
	if err != nil {
		_ = s.rollback(ctx, tx)
		return err
	}
	return s.commit(ctx, tx)
}

var _ = rivertype.JobStateCompleted
