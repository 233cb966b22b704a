package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

// sqliteDB is the embedded database: one file, opened by every process
// that uses it (sqlitedb.Open sets it up for that).
type sqliteDB struct {
	db     *sql.DB
	path   string
	driver *riversqlite.Driver
}

// createSQLite makes a new database file with River's tables and the
// business tables. An existing file is refused: its rows would belong to
// an earlier run, whose creates the fakes, started empty, never saw.
func createSQLite(ctx context.Context, path string) (*sqliteDB, error) {
	switch _, err := os.Stat(path); {
	case err == nil:
		return nil, fmt.Errorf("-db %s: the file exists; give the path of a new one", path)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("-db %s: %w", path, err)
	}
	db, err := openSQLite(path)
	if err != nil {
		return nil, err
	}
	if err := saferiver.Migrate(ctx, db.driver); err != nil {
		db.Close()
		return nil, err
	}
	for _, ddl := range businessTables {
		if _, err := db.db.ExecContext(ctx, ddl); err != nil {
			db.Close()
			return nil, fmt.Errorf("creating the business tables: %w", err)
		}
	}
	return db, nil
}

// openSQLite opens the file a parent process created.
func openSQLite(path string) (*sqliteDB, error) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		return nil, err
	}
	return &sqliteDB{db: db, path: path, driver: riversqlite.New(db)}, nil
}

func (s *sqliteDB) Driver() riverdriver.Driver[*sql.Tx] { return s.driver }

func (s *sqliteDB) Begin(ctx context.Context) (*sql.Tx, error) { return s.db.BeginTx(ctx, nil) }

func (s *sqliteDB) Commit(_ context.Context, tx *sql.Tx) error { return tx.Commit() }

func (s *sqliteDB) Rollback(_ context.Context, tx *sql.Tx) error { return tx.Rollback() }

func (s *sqliteDB) Exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *sqliteDB) Query(ctx context.Context, query string, row func(scan func(dest ...any) error) error) error {
	rows, err := s.db.QueryContext(ctx, query)
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

func (s *sqliteDB) Describe() string { return "SQLite " + s.path }

func (s *sqliteDB) WorkerEnv() []string { return []string{sqliteEnv + "=" + s.path} }

func (s *sqliteDB) Close() { s.db.Close() }
