package main

import (
	"context"

	"github.com/riverqueue/river/riverdriver"
)

// database is the application's database: its business tables (invoices,
// payouts) with River's tables beside them, on SQLite or PostgreSQL. TTx
// is the transaction type of its River driver: *sql.Tx for riversqlite,
// pgx.Tx for riverpgxv5. Statements use $1, $2... placeholders, which
// both understand.
type database[TTx any] interface {
	Driver() riverdriver.Driver[TTx]
	Begin(ctx context.Context) (TTx, error)
	Commit(ctx context.Context, tx TTx) error
	Rollback(ctx context.Context, tx TTx) error
	// Exec runs a statement in tx and returns how many rows it changed.
	Exec(ctx context.Context, tx TTx, query string, args ...any) (int64, error)
	// Query runs a query outside any transaction and calls row for each
	// row, with the function that scans it.
	Query(ctx context.Context, query string, row func(scan func(dest ...any) error) error) error
	// Describe names the database for the output, without a password.
	Describe() string
	// WorkerEnv tells a worker process where the database is.
	WorkerEnv() []string
	Close()
}

// Where a worker process finds the database: one of the two is set.
const (
	sqliteEnv      = "DURABLE_CREATES_SQLITE"       // the SQLite file
	databaseURLEnv = "DURABLE_CREATES_DATABASE_URL" // PostgreSQL, search_path set to the run's schema
)

// businessTables are the application's own: each row holds the
// idempotency key of its create from the moment it commits, and the
// entity's id once the create's job completes.
var businessTables = []string{
	`CREATE TABLE IF NOT EXISTS invoices (
		number     TEXT PRIMARY KEY,
		total      TEXT NOT NULL,
		request_id TEXT NOT NULL UNIQUE, -- Chift's X-Chift-Client-RequestId
		entity_id  TEXT                  -- Chift's invoice id
	)`,
	`CREATE TABLE IF NOT EXISTS payouts (
		number             TEXT PRIMARY KEY,
		amount             TEXT NOT NULL,
		client_transfer_id TEXT NOT NULL UNIQUE, -- zerohash's idempotency key
		transfer_id        BIGINT                -- zerohash's transfer id
	)`,
}
