package saferiver_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/saferetry/saferetry-go/saferiver"
)

// DefaultTestDatabaseURL is the database .ci/run creates; set
// SAFERIVER_DATABASE_URL to use another.
const DefaultTestDatabaseURL = "postgres://saferiver:saferiver@localhost:5432/saferiver?sslmode=disable"

func testDatabaseURL() string {
	if u := os.Getenv("SAFERIVER_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultTestDatabaseURL
}

// pgDB connects to the test database, in a schema of its own (dropped at
// the end), migrated, with the business tables. It returns the pool and
// the URL that reaches the same schema, for worker processes. Without a
// server it skips, except under CI=true, where it fails.
func pgDB(t testing.TB) (*pgxpool.Pool, *riverpgxv5.Driver, string) {
	t.Helper()
	ctx := context.Background()
	base := testDatabaseURL()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at %s (%v): start it (as root: pg_ctlcluster 15 main start; .ci/run does, and creates the role and database) or set SAFERIVER_DATABASE_URL", base, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	schema := fmt.Sprintf("t_%d_%d", os.Getpid(), schemaSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close(context.Background())
	})
	url := withSearchPath(base, schema)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	driver := riverpgxv5.New(pool)
	if err := saferiver.Migrate(ctx, driver); err != nil {
		t.Fatal(err)
	}
	for _, ddl := range []string{
		`CREATE TABLE invoices (id bigserial PRIMARY KEY, request_id text NOT NULL UNIQUE, entity_id text)`,
		`CREATE TABLE payouts (id bigserial PRIMARY KEY, client_transfer_id text NOT NULL UNIQUE, transfer_id bigint)`,
	} {
		if _, err := pool.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	return pool, driver, url
}

// withSearchPath adds search_path to a postgres URL, so that every
// connection of it uses schema.
func withSearchPath(base, schema string) string {
	sep := "?"
	for _, c := range base {
		if c == '?' {
			sep = "&"
		}
	}
	return base + sep + "search_path=" + schema
}

var schemaSeq atomic.Int64
