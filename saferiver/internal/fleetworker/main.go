// Command fleetworker is the worker process of saferiver's crash and fleet
// tests: a River client that works ChiftCreateArgs and TransferCreateArgs
// jobs against the two fakes of package saferetrytest, and writes each
// created entity's id into the business tables in the transaction that
// completes its job. The tests start several of them on one database,
// SIGKILL some mid-flight and start others in their place.
//
// It opens the database (-db: a postgres:// URL, or the path of a SQLite
// file opened with sqlitedb.Open), which must be migrated
// (saferiver.Migrate) and hold the business tables
//
//	invoices(request_id, entity_id)
//	payouts(client_transfer_id, transfer_id)
//
// unless -migrate is given (River's tables only). It runs until SIGTERM or
// SIGINT, then stops River (finishing the jobs in hand, up to -stop-timeout)
// and exits 0; SIGKILL is what the tests use to crash it.
//
// Every flag can also be given by the environment variable named in its
// help; the zerohash secret and passphrase are best given that way, out of
// the process list. Timeouts are short so that a killed process's jobs are
// rescued within seconds: River requires -rescue-after >= -job-timeout, and
// an attempt (-attempt-timeout) must be much shorter than -job-timeout.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

type options struct {
	db, id                        string
	chiftURL, zhURL               string
	zhKey, zhSecret, zhPassphrase string
	maxWorkers                    int
	pgMaxConns                    int
	jobTimeout, rescueAfter       time.Duration
	attemptTimeout                time.Duration
	fetchPoll, retryDelay         time.Duration
	stopTimeout                   time.Duration
	budgetRatio, budgetPerSecond  float64
	migrate                       bool
	logLevel                      string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetworker:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "fleetworker:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("fleetworker", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.db, "db", "", "postgres:// URL, or the path of a SQLite file")
	fs.StringVar(&o.id, "id", "", "River client id, unique per process (default: host and pid)")
	fs.StringVar(&o.chiftURL, "chift-url", "", "base URL of the Chift API; empty: no Chift worker")
	fs.StringVar(&o.zhURL, "zerohash-url", "", "base URL of the zerohash API; empty: no transfer worker")
	fs.StringVar(&o.zhKey, "zerohash-api-key", "", "zerohash API key")
	fs.StringVar(&o.zhSecret, "zerohash-secret", "", "zerohash base64 secret")
	fs.StringVar(&o.zhPassphrase, "zerohash-passphrase", "", "zerohash passphrase")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	fs.IntVar(&o.maxWorkers, "max-workers", 8, "jobs worked at once")
	fs.IntVar(&o.pgMaxConns, "pg-max-conns", 10, "PostgreSQL pool size")
	fs.DurationVar(&o.jobTimeout, "job-timeout", 5*time.Second, "River's JobTimeout")
	fs.DurationVar(&o.rescueAfter, "rescue-after", 7*time.Second, "River's RescueStuckJobsAfter, at least -job-timeout")
	fs.DurationVar(&o.attemptTimeout, "attempt-timeout", 400*time.Millisecond, "the saferetry clients' attempt timeout")
	fs.DurationVar(&o.fetchPoll, "fetch-poll", 50*time.Millisecond, "River's FetchPollInterval")
	fs.DurationVar(&o.retryDelay, "retry-delay", 100*time.Millisecond, "wait before a failed job's next attempt")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 10*time.Second, "on SIGTERM, how long to finish the jobs in hand")
	fs.BoolVar(&o.migrate, "migrate", false, "apply River's migrations first")
	fs.Float64Var(&o.budgetRatio, "retry-budget-ratio", saferetry.DefaultRetryRatio, "each saferetry client's retry budget: retries per request")
	fs.Float64Var(&o.budgetPerSecond, "retry-budget-per-second", saferetry.DefaultRetriesPerSec, "each saferetry client's retry budget: retries per second")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " (env " + envName(f.Name) + ")" })
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !onCommandLine[f.Name] && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	switch {
	case o.db == "":
		return nil, errors.New("-db is required")
	case o.chiftURL == "" && o.zhURL == "":
		return nil, errors.New("give -chift-url, -zerohash-url or both")
	case o.zhURL != "" && (o.zhKey == "" || o.zhSecret == "" || o.zhPassphrase == ""):
		return nil, errors.New("-zerohash-url needs the API key, secret and passphrase")
	case o.maxWorkers < 1 || o.pgMaxConns < 1:
		return nil, errors.New("-max-workers and -pg-max-conns must be positive")
	case o.jobTimeout <= 0 || o.attemptTimeout <= 0 || o.fetchPoll <= 0 || o.retryDelay <= 0 || o.stopTimeout <= 0:
		return nil, errors.New("durations must be positive")
	case o.rescueAfter < o.jobTimeout:
		return nil, fmt.Errorf("-rescue-after %v is shorter than -job-timeout %v, which River refuses", o.rescueAfter, o.jobTimeout)
	case o.attemptTimeout >= o.jobTimeout:
		return nil, fmt.Errorf("-attempt-timeout %v leaves no room for a retry within -job-timeout %v", o.attemptTimeout, o.jobTimeout)
	}
	if _, err := levelOf(o.logLevel); err != nil {
		return nil, fmt.Errorf("-log-level %q: %w", o.logLevel, err)
	}
	if o.id == "" {
		host, _ := os.Hostname()
		o.id = fmt.Sprintf("fleetworker-%s-%d", host, os.Getpid())
	}
	return o, nil
}

// envName is the environment variable of a flag: FLEETWORKER_ and the
// flag's name in upper case, dashes as underscores.
func envName(flagName string) string {
	return "FLEETWORKER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

func run(ctx context.Context, o *options) error {
	if isPostgres(o.db) {
		cfg, err := pgxpool.ParseConfig(o.db)
		if err != nil {
			return fmt.Errorf("parsing -db: %w", err)
		}
		cfg.MaxConns = int32(o.pgMaxConns)
		// pg_stat_activity names the worker: after a SIGKILL, the test
		// waits until the server has ended its sessions.
		cfg.ConnConfig.RuntimeParams["application_name"] = o.id
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("connecting: %w", err)
		}
		defer pool.Close()
		return serve(ctx, o, riverpgxv5.New(pool), dollar, func(ctx context.Context, tx pgx.Tx, q string, args ...any) (int64, error) {
			tag, err := tx.Exec(ctx, q, args...)
			return tag.RowsAffected(), err
		})
	}
	db, err := sqlitedb.Open(o.db)
	if err != nil {
		return err
	}
	defer db.Close()
	return serve(ctx, o, riversqlite.New(db), question, func(ctx context.Context, tx *sql.Tx, q string, args ...any) (int64, error) {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	})
}

func dollar(n int) string { return "$" + strconv.Itoa(n) }
func question(int) string { return "?" }

func levelOf(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// execFunc runs a statement in the job's transaction and returns the rows
// it changed.
type execFunc[TTx any] func(ctx context.Context, tx TTx, q string, args ...any) (int64, error)

func serve[TTx any](ctx context.Context, o *options, driver riverdriver.Driver[TTx], ph func(int) string, exec execFunc[TTx]) error {
	level, _ := levelOf(o.logLevel) // checked by parseFlags
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", o.id)
	if o.migrate {
		if err := saferiver.Migrate(ctx, driver); err != nil {
			return err
		}
	}
	cfg := saferiver.Config[TTx]{}
	var err error
	common := []saferetry.Option{saferetry.WithLogger(logger), saferetry.WithAttemptTimeout(o.attemptTimeout),
		saferetry.WithBackoff(5*time.Millisecond, 100*time.Millisecond), saferetry.WithRetryBudget(o.budgetRatio, o.budgetPerSecond)}
	if o.chiftURL != "" {
		if cfg.Chift, err = saferetry.NewClient(o.chiftURL, append(common, saferetry.WithChift())...); err != nil {
			return err
		}
		update := "UPDATE invoices SET entity_id = " + ph(1) + " WHERE request_id = " + ph(2) + " AND entity_id IS NULL"
		cfg.OnChiftCreated = func(ctx context.Context, tx TTx, job *river.Job[saferiver.ChiftCreateArgs], c *saferetry.ChiftCreated) error {
			return setOnce(ctx, tx, exec, update, "invoice", job.Args.RequestID, c.EntityID)
		}
	}
	if o.zhURL != "" {
		if cfg.ZeroHash, err = saferetry.NewClient(o.zhURL, append(common, saferetry.WithZeroHashAuth(o.zhKey, o.zhSecret, o.zhPassphrase))...); err != nil {
			return err
		}
		update := "UPDATE payouts SET transfer_id = " + ph(1) + " WHERE client_transfer_id = " + ph(2) + " AND transfer_id IS NULL"
		cfg.OnTransferCreated = func(ctx context.Context, tx TTx, job *river.Job[saferiver.TransferCreateArgs], t *saferetry.Transfer) error {
			return setOnce(ctx, tx, exec, update, "payout", job.Args.ClientTransferID, t.ID)
		}
	}
	workers := river.NewWorkers()
	if err := saferiver.AddWorkers(workers, cfg); err != nil {
		return err
	}
	client, err := river.NewClient(driver, &river.Config{
		ID:                   o.id,
		Logger:               logger,
		Queues:               map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.maxWorkers}},
		Workers:              workers,
		FetchPollInterval:    o.fetchPoll,
		FetchCooldown:        min(o.fetchPoll, 10*time.Millisecond),
		RetryPolicy:          fixedDelay(o.retryDelay),
		JobTimeout:           o.jobTimeout,
		RescueStuckJobsAfter: o.rescueAfter,
	})
	if err != nil {
		return err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	fmt.Printf("fleetworker %s: started (pid %d)\n", o.id, os.Getpid())
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), o.stopTimeout)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		logger.Warn("jobs still in hand at the stop timeout; cancelling them", "error", err)
		cancelCtx, cancel := context.WithTimeout(context.Background(), o.stopTimeout)
		defer cancel()
		if err := client.StopAndCancel(cancelCtx); err != nil {
			return fmt.Errorf("stopping: %w", err)
		}
	}
	fmt.Printf("fleetworker %s: stopped\n", o.id)
	return nil
}

// setOnce writes id into the business row of key, which must exist and
// hold no id yet: a second write would mean a job completed twice.
func setOnce[TTx any](ctx context.Context, tx TTx, exec execFunc[TTx], update, table, key string, id any) error {
	n, err := exec(ctx, tx, update, id, key)
	if err != nil {
		return fmt.Errorf("%s %s: %w", table, key, err)
	}
	if n != 1 {
		return fmt.Errorf("%s %s: %d rows without an id updated, want 1", table, key, n)
	}
	return nil
}

// fixedDelay retries a failed job after a fixed wait, instead of River's
// attempt^4 seconds.
type fixedDelay time.Duration

func (d fixedDelay) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(time.Duration(d)) }
