package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/saferetry/saferetry-go/saferiver"
)

// postgresDB is a PostgreSQL schema the run owns: its URL sets
// search_path, so River's tables and the business tables live there, for
// this process and the workers alike.
type postgresDB struct {
	pool   *pgxpool.Pool
	url    *url.URL
	schema string
	driver *riverpgxv5.Driver
}

// createPostgres drops the schema (an earlier run's), creates it again,
// and migrates River's tables and the business tables into it.
func createPostgres(ctx context.Context, databaseURL, schema string) (*postgresDB, error) {
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("-database-url: want postgres://user:password@host:port/database?sslmode=..., not %q", redacted(databaseURL))
	}
	admin, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident+" CASCADE"); err != nil {
		return nil, fmt.Errorf("dropping the schema %s of an earlier run: %w", schema, err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		return nil, fmt.Errorf("creating the schema %s: %w", schema, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := openPostgres(ctx, u.String())
	if err != nil {
		return nil, err
	}
	if err := saferiver.Migrate(ctx, db.driver); err != nil {
		db.Close()
		return nil, err
	}
	for _, ddl := range businessTables {
		if _, err := db.pool.Exec(ctx, ddl); err != nil {
			db.Close()
			return nil, fmt.Errorf("creating the business tables: %w", err)
		}
	}
	return db, nil
}

// openPostgres connects to the schema a parent process created; the URL
// carries its search_path.
func openPostgres(ctx context.Context, databaseURL string) (*postgresDB, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("the database URL: %w", err)
	}
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	return &postgresDB{pool: pool, url: u, schema: u.Query().Get("search_path"), driver: riverpgxv5.New(pool)}, nil
}

func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

func (p *postgresDB) Driver() riverdriver.Driver[pgx.Tx] { return p.driver }

func (p *postgresDB) Begin(ctx context.Context) (pgx.Tx, error) { return p.pool.Begin(ctx) }

func (p *postgresDB) Commit(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) }

func (p *postgresDB) Rollback(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) }

func (p *postgresDB) Exec(ctx context.Context, tx pgx.Tx, query string, args ...any) (int64, error) {
	tag, err := tx.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (p *postgresDB) Query(ctx context.Context, query string, row func(scan func(dest ...any) error) error) error {
	rows, err := p.pool.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (p *postgresDB) Describe() string {
	u := *p.url
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return fmt.Sprintf("PostgreSQL %s, schema %s", u.Redacted(), p.schema)
}

func (p *postgresDB) WorkerEnv() []string { return []string{databaseURLEnv + "=" + p.url.String()} }

func (p *postgresDB) Close() { p.pool.Close() }
