// Package saferiver makes Chift and zerohash creates durable: a create is
// a River job (github.com/riverqueue/river), inserted in the
// application's own database transaction, and a worker makes it with the
// SDK's Chift.Create or Transfers.Create, under an idempotency key fixed
// at insert. River runs a job at least once: it retries failed attempts
// with backoff and rescues the jobs of a worker that died. The key, the
// same on every attempt, and the SDK's lookups make the create happen at
// most once, so together it happens exactly once, across crashes of the
// application and across a fleet of instances sharing one database.
//
// It is a module of its own (github.com/saferetry/saferetry-go/saferiver),
// so that the core SDK's dependencies do not grow.
//
// # Databases
//
// SQLite, embedded in a file, through the pure-Go driver modernc.org/sqlite
// (no cgo) and River's riversqlite driver: sqlitedb.Open opens it, for one
// application instance. Postgres through pgx and River's riverpgxv5 driver,
// for any number of instances sharing the database. Migrate applies River's
// migrations to either; the application's own tables are its own.
//
// # Using it
//
//  1. Migrate once; register the workers with AddWorkers on a
//     river.Workers, with the Chift and/or zerohash client and, when the
//     business record must receive the entity id, a hook; start a River
//     client.
//  2. In the transaction that writes the business record, call
//     InsertChiftCreateTx or InsertTransferCreateTx. It refuses bad input
//     (the SDK's own validation) before anything is inserted, assigns the
//     key when none was given, and returns it: store it with the record.
//     If the transaction rolls back, the job never existed and nothing is
//     ever sent.
//  3. The worker's outcome: the job completes (output: the entity or
//     transfer id, the outcome, the status) and the hook commits with the
//     completion; or it is cancelled with a *RejectedError (nothing
//     created: correct the create and insert a new job) or a
//     *ReconcileError (look the key up by hand); or it fails the attempt
//     and River retries it, same key. See AddWorkers.
//
// # What the guarantee rests on
//
//   - A key identifies one create for good. Insert refuses a key held by a
//     job for another create while River keeps that job (until its job
//     cleaner deletes it: by default 24 h after completion or
//     cancellation, 7 days after discard); past that, reusing a key is
//     the caller's doing, and zerohash itself forgets a client_transfer_id
//     after 72 h.
//   - An attempt after the first is a resume: its create gets FirstSentAt
//     from the job's creation time. River counts an attempt when it hands
//     a job to a worker, so a rescued job always resumes; a job must not
//     be snoozed (river.JobSnooze takes the attempt back).
//   - The database's clock and the workers' clocks agree within a minute
//     (zerohash refuses signatures more than 60 s off anyway).
//   - River's JobTimeout bounds each attempt: a create that has not
//     settled by then ends as unknown and is retried (see River settings).
//   - A created hook writes only through its tx, and may be called again
//     after a failed attempt (its writes then rolled back); it commits at
//     most once per run of the job to completion. River's Client.JobRetry
//     of a completed job runs it again: the create is recovered under its
//     key, not repeated, and the hook commits again, so write it to set
//     the id rather than to add. A failure hook commits at least once per
//     cancelled job.
//   - A job cancelled from outside while it runs (River's
//     Client.JobCancel) ends as "reconcile" when its create may have been
//     sent, else "rejected"; its failure hook runs.
//   - Only the job's current run ends it: a run River presumed dead and
//     handed to another worker (a frozen process, say) neither completes
//     nor cancels the job when it wakes up.
//   - A job River discards (its worker died during its last attempt: the
//     rescuer discards instead of retrying) has no Output and ran no
//     failure hook: treat a discarded create job as one to reconcile.
//
// # River settings
//
// River's defaults suit these jobs but for two, which a real deployment
// should set (the example's seconds are for a demonstration):
//
//	&river.Config{
//		// Each attempt: Chift's attempts take up to 90 s
//		// (saferetry.DefaultChiftAttemptTimeout) and Chift.Create polls
//		// Chift's log for up to 2 min. River's default is 1 min.
//		JobTimeout: 5 * time.Minute,
//		// How long a dead worker's jobs wait before another worker
//		// resumes them; at least JobTimeout. River's default is 1 h.
//		RescueStuckJobsAfter: 10 * time.Minute,
//	}
//
// River's default retry policy (attempt^4 seconds, 25 attempts) spreads a
// job's attempts over about three weeks; a zerohash create still unsettled
// 71 h after its insert ends for reconciliation, as its key may expire.
// River's rescuer runs on its elected leader: after the leader dies,
// another instance takes over once the leader's lease lapses (River
// v0.51: 15 s), then rescues the dead workers' jobs.
package saferiver
