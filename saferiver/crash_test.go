package saferiver_test

import "testing"

// The crash tests: worker processes SIGKILLed while a create is in flight
// (held at the fake until the worker is dead, then completed there), some
// inserts rolled back, 30 % of first attempts faulted. Every committed job
// must end with exactly one entity, made under its key, recorded in its
// business row; no rolled-back key may ever reach a fake.

// TestCrashSQLite: one worker process at a time on the SQLite file,
// killed twice mid-flight and replaced.
func TestCrashSQLite(t *testing.T) {
	t.Parallel()
	r := newProcRun(t, sqliteProcStore(t), procPlan{name: "crash sqlite", jobs: 200, procs: 1, kills: 2,
		faultPct: 30, dupEvery: 20, maxWorkers: 8})
	r.run()
}

// TestCrashPostgres: two worker processes on one PostgreSQL schema, one
// killed mid-flight, twice, each replaced.
func TestCrashPostgres(t *testing.T) {
	t.Parallel()
	r := newProcRun(t, pgProcStore(t), procPlan{name: "crash postgres", jobs: 300, procs: 2, kills: 2,
		faultPct: 30, dupEvery: 20, maxWorkers: 8})
	r.run()
}
