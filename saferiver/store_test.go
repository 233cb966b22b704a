package saferiver_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
)

// store is one database the tests run on, behind River's driver: SQLite
// (TTx *sql.Tx) or Postgres (TTx pgx.Tx). Queries are written with $n
// placeholders.
type store[TTx any] struct {
	driver   riverdriver.Driver[TTx]
	begin    func(context.Context) (TTx, error)
	commit   func(context.Context, TTx) error
	rollback func(context.Context, TTx) error
	txExec   func(ctx context.Context, tx TTx, q string, args ...any) error
	exec     func(ctx context.Context, q string, args ...any) error
	// strings runs a query of rows of text columns.
	strings func(ctx context.Context, q string, args ...any) ([][]string, error)
}

func sqliteStore(t testing.TB) *store[*sql.Tx] {
	db, driver := sqliteDB(t)
	return &store[*sql.Tx]{
		driver:   driver,
		begin:    func(ctx context.Context) (*sql.Tx, error) { return db.BeginTx(ctx, nil) },
		commit:   func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
		rollback: func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() },
		txExec: func(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, q, args...)
			return err
		},
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := db.ExecContext(ctx, q, args...)
			return err
		},
		strings: func(ctx context.Context, q string, args ...any) ([][]string, error) {
			rows, err := db.QueryContext(ctx, q, args...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			return scanStrings(rows.Next, rows.Err, rows.Columns, rows.Scan)
		},
	}
}

func pgStore(t testing.TB) *store[pgx.Tx] {
	pool, driver, _ := pgDB(t)
	return &store[pgx.Tx]{
		driver:   driver,
		begin:    func(ctx context.Context) (pgx.Tx, error) { return pool.Begin(ctx) },
		commit:   func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
		rollback: func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) },
		txExec: func(ctx context.Context, tx pgx.Tx, q string, args ...any) error {
			_, err := tx.Exec(ctx, q, args...)
			return err
		},
		exec: func(ctx context.Context, q string, args ...any) error {
			_, err := pool.Exec(ctx, q, args...)
			return err
		},
		strings: func(ctx context.Context, q string, args ...any) ([][]string, error) {
			rows, err := pool.Query(ctx, q, args...)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out [][]string
			for rows.Next() {
				vals, err := rows.Values()
				if err != nil {
					return nil, err
				}
				row := make([]string, len(vals))
				for i, v := range vals {
					if v != nil {
						row[i] = fmt.Sprint(v)
					}
				}
				out = append(out, row)
			}
			return out, rows.Err()
		},
	}
}

func scanStrings(next func() bool, rerr func() error, cols func() ([]string, error), scan func(...any) error) ([][]string, error) {
	names, err := cols()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for next() {
		vals := make([]sql.NullString, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = v.String
		}
		out = append(out, row)
	}
	return out, rerr()
}

// both runs a test on SQLite and on Postgres.
func both(t *testing.T, onSQLite func(*testing.T, *store[*sql.Tx]), onPostgres func(*testing.T, *store[pgx.Tx])) {
	t.Run("sqlite", func(t *testing.T) { onSQLite(t, sqliteStore(t)) })
	t.Run("postgres", func(t *testing.T) { onPostgres(t, pgStore(t)) })
}

// one returns the single text value of a query.
func (s *store[TTx]) one(t testing.TB, q string, args ...any) string {
	t.Helper()
	rows, err := s.strings(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		t.Fatalf("%s: %d rows, want one value", q, len(rows))
	}
	return rows[0][0]
}

// inTx runs f in a transaction and commits it, or rolls it back when
// rollback is set.
func (s *store[TTx]) inTx(t testing.TB, rollback bool, f func(tx TTx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f(tx)
	if rollback {
		err = s.rollback(ctx, tx)
	} else {
		err = s.commit(ctx, tx)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (s *store[TTx]) client(t testing.TB, workers *river.Workers, tune func(*river.Config)) *river.Client[TTx] {
	t.Helper()
	cfg := riverConfig(workers)
	if tune != nil {
		tune(cfg)
	}
	c, err := river.NewClient(s.driver, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *store[TTx]) start(t testing.TB, c *river.Client[TTx]) {
	t.Helper()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
}

// countJobs is the number of River jobs in the database.
func (s *store[TTx]) countJobs(t testing.TB) string {
	return s.one(t, "SELECT count(*) FROM river_job")
}

var _ = strings.Contains
