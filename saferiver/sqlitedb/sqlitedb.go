// Package sqlitedb opens the embedded SQLite database of the durable
// layer: a file, through the pure-Go driver modernc.org/sqlite (no cgo),
// set up for River's riversqlite driver.
package sqlitedb

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// BusyTimeoutMillis is how long, in milliseconds, a connection waits for
// another process's write lock before SQLite answers SQLITE_BUSY.
const BusyTimeoutMillis = 10000

// Open opens (creating it if needed) the SQLite database in the file at
// path, for River's riversqlite driver and the application's own tables:
//
//   - write-ahead logging, so that readers and the writer of several
//     processes (an inserter, a worker) do not block each other;
//   - synchronous=FULL: a committed job is on disk before Commit returns;
//   - transactions take the write lock at BEGIN (IMMEDIATE), and wait up
//     to BusyTimeoutMillis for it;
//   - one open connection, as riversqlite advises: River's goroutines then
//     take turns instead of failing with SQLITE_BUSY.
//
// With one connection, code that holds a transaction must do all of its
// work through it: another statement on the *sql.DB would wait for the
// transaction's connection, which waits for it.
func Open(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("sqlitedb: empty path")
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeoutMillis))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlitedb: opening %s: %w", path, err)
	}
	return db, nil
}
