package saferiver_test

import "testing"

// TestFleet: three worker processes on one PostgreSQL schema work at least
// 2,000 jobs (SAFERIVER_FLEET_JOBS scales it), a mix of Chift creates and
// zerohash transfers, 30 % of first attempts faulted; a worker is
// SIGKILLed mid-flight twice and replaced each time, and River's rescuer
// hands its jobs to the others after 7 s (-rescue-after). Exactly one
// entity per job: none lost, none duplicated, every request under the key
// its job was inserted with, across attempts and rescues. It prints one
// line starting with "fleet " for CI's log.
func TestFleet(t *testing.T) {
	t.Parallel()
	r := newProcRun(t, pgProcStore(t), procPlan{name: "fleet", jobs: fleetJobs(t, 2000), procs: 3, kills: 2,
		faultPct: 30, maxWorkers: 8})
	s := r.run()
	if s.duplicates != 0 || s.lost != 0 {
		t.Errorf("%d duplicates, %d lost", s.duplicates, s.lost)
	}
}
