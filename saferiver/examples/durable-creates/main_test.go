package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestMain makes the test binary a worker process when run() starts one:
// run() starts os.Executable(), which under go test is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

func TestRunSQLite(t *testing.T) {
	t.Parallel()
	runAndCheck(t, options{creates: defaultCreates, seed: 1})
}

// defaultTestDatabaseURL is the database .ci/run creates; set
// SAFERIVER_DATABASE_URL to use another.
const defaultTestDatabaseURL = "postgres://saferiver:saferiver@localhost:5432/saferiver?sslmode=disable"

func TestRunPostgres(t *testing.T) {
	t.Parallel()
	url := os.Getenv("SAFERIVER_DATABASE_URL")
	if url == "" {
		url = defaultTestDatabaseURL
	}
	requirePostgres(t, url)
	schema := fmt.Sprintf("durable_creates_test_%d", os.Getpid())
	t.Cleanup(func() { dropSchema(t, url, schema) })
	runAndCheck(t, options{creates: defaultCreates, seed: 2, databaseURL: url, schema: schema})
}

func TestRunRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts options
		want string
	}{
		{"too few creates", options{creates: 1}, "-n is 1"},
		{"too many creates", options{creates: maxCreates + 1}, "-n is"},
		{"schema name", options{creates: 4, databaseURL: defaultTestDatabaseURL, schema: "x; DROP"}, "-schema"},
		{"not a postgres URL", options{creates: 4, databaseURL: "mysql://localhost/db", schema: defaultSchema}, "-database-url"},
		{"existing SQLite file", options{creates: 4, dbPath: existingFile(t)}, "the file exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func runAndCheck(t *testing.T, opts options) {
	t.Helper()
	var out bytes.Buffer
	opts.out = &out
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := run(ctx, opts)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"killed after", "rescued the", "\nOK: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output has no %q", want)
		}
	}
}

// requirePostgres skips the test without a server, except under
// CI=true, where it fails.
func requirePostgres(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at %s (%v): start it, or set SAFERIVER_DATABASE_URL", redacted(url), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	conn.Close(ctx)
}

func dropSchema(t *testing.T, url, schema string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
	}
}

func existingFile(t *testing.T) string {
	f, err := os.CreateTemp(t.TempDir(), "app-*.db")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}
