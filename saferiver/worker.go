package saferiver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
)

// Config configures the create workers. TTx is the River driver's
// transaction type: *sql.Tx for riversqlite, pgx.Tx for riverpgxv5.
type Config[TTx any] struct {
	// Chift sends ChiftCreateArgs jobs; it must be made with
	// saferetry.WithChift(). Nil: no Chift worker is added.
	Chift *saferetry.Client
	// ZeroHash sends TransferCreateArgs jobs; it must be made for zerohash:
	// saferetry.WithZeroHashAuth (or WithZeroHashRequestID, when the
	// requests are signed elsewhere). Nil: no transfer worker is added.
	ZeroHash *saferetry.Client

	// OnChiftCreated, when set, runs once the entity exists, inside the
	// transaction that completes the job (River's JobCompleteTx): write
	// the entity id into the business record with tx, and the record and
	// the job's completion commit together. An error rolls both back and
	// the job is retried; the retry finds the same entity under the same
	// key and calls the hook again. The hook must use tx for its writes
	// (on SQLite with one connection, another connection would wait on
	// tx forever), and it commits at most once per job: a run that is no
	// longer the job's current attempt (River rescued the job while it
	// was still running) rolls back before the hook runs.
	OnChiftCreated func(ctx context.Context, tx TTx, job *river.Job[ChiftCreateArgs], created *saferetry.ChiftCreated) error
	// OnTransferCreated is OnChiftCreated for transfers.
	OnTransferCreated func(ctx context.Context, tx TTx, job *river.Job[TransferCreateArgs], transfer *saferetry.Transfer) error

	// OnChiftFailed, when set, runs when a Chift create job is about to be
	// cancelled, in a transaction of its own that commits before the
	// cancel: mark the business record rejected or to reconcile. out is
	// the output the job records; err is the *RejectedError or
	// *ReconcileError it is cancelled with. The hook runs at least once per
	// cancelled job (again if the process dies between its commit and the
	// cancel), so write it to be repeated. An error from it fails the
	// attempt, which River retries (the create meets the same answer
	// again); on the job's last attempt the job is cancelled anyway, the
	// hook's error joined to the cancel's.
	OnChiftFailed func(ctx context.Context, tx TTx, job *river.Job[ChiftCreateArgs], out *Output, err error) error
	// OnTransferFailed is OnChiftFailed for transfers.
	OnTransferFailed func(ctx context.Context, tx TTx, job *river.Job[TransferCreateArgs], out *Output, err error) error
}

// AddWorkers registers a worker for each API whose client cfg has: the
// Chift worker for ChiftCreateArgs, the transfer worker for
// TransferCreateArgs. It fails, registering nothing, when cfg has no
// client, when a client was made for the other API (Client.Protocol), or
// when a hook's API has no client.
//
// A worker runs one create per attempt, under the key in the job's args:
//
//   - created or recovered: the job completes with an Output (entity or
//     transfer id, outcome, status), and the hook runs in the completing
//     transaction;
//   - a definite refusal: the job is cancelled with a *RejectedError;
//   - an outcome retrying cannot settle (the key may have expired, an
//     entity under the key may be another's): cancelled with a
//     *ReconcileError that names the key;
//   - anything else (outcome unknown, not created, rate limited, the
//     context ended): the job fails this attempt and River retries it on
//     its retry policy, under the same key; on the job's last attempt it
//     is cancelled instead, with a *ReconcileError when the outcome is
//     unknown, else a *RejectedError.
//
// The failure hooks run before each cancel. An attempt after the first
// (River's Attempt above 1, or an error recorded) resumes: the create's
// FirstSentAt is Output.FirstSentBy, no later than the first send: when
// the job was inserted, on this process's clock whatever the database's
// clock says (the job's age is read from River's created_at and
// attempted_at, both stamped by the database), or, for a job first
// attempted more than an hour after its insert (scheduled ahead, or a
// backlog), when that attempt started, which it records before sending. Transfers.Create then looks the id up before it posts again,
// and both creates refuse to post once the key may have expired.
func AddWorkers[TTx any](workers *river.Workers, cfg Config[TTx]) error {
	if workers == nil {
		return errors.New("saferiver: AddWorkers: workers is nil")
	}
	if cfg.Chift == nil && cfg.ZeroHash == nil {
		return errors.New("saferiver: AddWorkers: Config has neither a Chift nor a ZeroHash client, so no worker could create anything")
	}
	if cfg.Chift != nil && cfg.Chift.Protocol() != "chift" {
		return errors.New("saferiver: AddWorkers: Config.Chift was not made with saferetry.WithChift(): its posts would not carry X-Chift-Client-RequestId")
	}
	if cfg.ZeroHash != nil && cfg.ZeroHash.Protocol() != "zerohash" {
		return errors.New("saferiver: AddWorkers: Config.ZeroHash was not made with saferetry.WithZeroHashRequestID()")
	}
	if cfg.OnChiftCreated != nil && cfg.Chift == nil {
		return errors.New("saferiver: AddWorkers: OnChiftCreated is set but Config.Chift is nil")
	}
	if (cfg.OnTransferCreated != nil || cfg.OnTransferFailed != nil) && cfg.ZeroHash == nil {
		return errors.New("saferiver: AddWorkers: OnTransferCreated or OnTransferFailed is set but Config.ZeroHash is nil")
	}
	if cfg.OnChiftFailed != nil && cfg.Chift == nil {
		return errors.New("saferiver: AddWorkers: OnChiftFailed is set but Config.Chift is nil")
	}
	if cfg.Chift != nil {
		w := &chiftWorker[TTx]{client: cfg.Chift, hook: cfg.OnChiftCreated, failedHook: cfg.OnChiftFailed}
		if err := river.AddWorkerSafely(workers, w); err != nil {
			return fmt.Errorf("saferiver: AddWorkers: %w", err)
		}
	}
	if cfg.ZeroHash != nil {
		w := &transferWorker[TTx]{client: cfg.ZeroHash, hook: cfg.OnTransferCreated, failedHook: cfg.OnTransferFailed}
		if err := river.AddWorkerSafely(workers, w); err != nil {
			return fmt.Errorf("saferiver: AddWorkers: %w", err)
		}
	}
	return nil
}

type chiftWorker[TTx any] struct {
	river.WorkerDefaults[ChiftCreateArgs]
	client     *saferetry.Client
	hook       func(context.Context, TTx, *river.Job[ChiftCreateArgs], *saferetry.ChiftCreated) error
	failedHook func(context.Context, TTx, *river.Job[ChiftCreateArgs], *Output, error) error
}

func (w *chiftWorker[TTx]) Work(ctx context.Context, job *river.Job[ChiftCreateArgs]) error {
	key := job.Args.RequestID
	e := newEnder(ctx, job, "chift", key, w.failedHook)
	if key == "" {
		return e.cancel(rejectJob, "", errors.New("the job's request_id is empty: insert it with InsertChiftCreateTx, which assigns one"))
	}
	first, err := e.firstSend(time.Now())
	if err != nil {
		return err
	}
	in := job.Args.create(first)
	if _, err := in.Prepare(); err != nil {
		return e.invalid(err)
	}
	created, err := w.client.Chift.Create(ctx, in)
	if err != nil {
		return e.failed(err)
	}
	outcome := "created"
	if created.Recovered {
		outcome = "recovered"
	}
	out := &Output{API: "chift", Key: key, Outcome: outcome, EntityID: created.EntityID, StatusCode: created.StatusCode, Attempt: job.Attempt,
		FirstSentBy: e.bound}
	return complete(e, job, out, func(tx TTx) error {
		if w.hook == nil {
			return nil
		}
		return w.hook(ctx, tx, job, created)
	})
}

type transferWorker[TTx any] struct {
	river.WorkerDefaults[TransferCreateArgs]
	client     *saferetry.Client
	hook       func(context.Context, TTx, *river.Job[TransferCreateArgs], *saferetry.Transfer) error
	failedHook func(context.Context, TTx, *river.Job[TransferCreateArgs], *Output, error) error
}

func (w *transferWorker[TTx]) Work(ctx context.Context, job *river.Job[TransferCreateArgs]) error {
	key := job.Args.ClientTransferID
	e := newEnder(ctx, job, "zerohash", key, w.failedHook)
	req := job.Args.Transfer
	switch {
	case key == "":
		return e.cancel(rejectJob, "", errors.New("the job's client_transfer_id is empty: insert it with InsertTransferCreateTx, which assigns one"))
	case req.ClientTransferID != "" && req.ClientTransferID != key:
		return e.cancel(rejectJob, "", fmt.Errorf("the job's transfer names client_transfer_id %s, the job %s", req.ClientTransferID, key))
	}
	first, err := e.firstSend(time.Now())
	if err != nil {
		return err
	}
	req.ClientTransferID, req.FirstSentAt = key, first
	if _, err := req.Prepare(); err != nil {
		return e.invalid(err)
	}
	t, err := w.client.Transfers.Create(ctx, req)
	if err != nil {
		return e.failed(err)
	}
	out := &Output{API: "zerohash", Key: key, Outcome: t.Outcome.String(), TransferID: t.ID, TransferStatus: t.Status, Attempt: job.Attempt,
		FirstSentBy: e.bound}
	if t.Outcome != saferetry.OutcomeRecovered {
		out.StatusCode = 201
	}
	return complete(e, job, out, func(tx TTx) error {
		if w.hook == nil {
			return nil
		}
		return w.hook(ctx, tx, job, t)
	})
}

// resumed: an earlier attempt of the job may have sent its create. River
// counts an attempt when it hands the job to a worker, before the worker
// runs, so a rescued job comes back with Attempt 2 or more.
func resumed(job *rivertype.JobRow) bool { return job.Attempt > 1 || len(job.Errors) > 0 }

// insertedAt is when the job was inserted, on this process's clock: the
// job's age is read on the database's clock alone (River stamps
// created_at at insert and attempted_at when it hands the job over, both
// with the database's now), and taken from this clock's now, less a
// second for the time between the hand-over and this call. A database
// clock that runs ahead or behind this one moves both stamps alike.
func insertedAt(job *rivertype.JobRow, now time.Time) time.Time {
	var age time.Duration
	if job.AttemptedAt != nil {
		age = max(job.AttemptedAt.Sub(job.CreatedAt), 0)
	} else if job.CreatedAt.Before(now) {
		age = now.Sub(job.CreatedAt)
	}
	return now.Add(-age - time.Second)
}

// longWait is how long after its insert a job's first attempt may start
// before the attempt records its own start: past it, the insert time
// would be too loose a bound of the first send (a create scheduled days
// ahead would look older than zerohash's 72 h window on its second
// attempt).
const longWait = time.Hour

// firstSend sets e.bound, a time no later than the create's first send,
// and returns the create's FirstSentAt: zero on the job's first attempt,
// e.bound afterwards. The bound is the one an earlier attempt recorded in
// the job's output, else the job's insert time. A first attempt that
// starts more than longWait after the insert records its own start first,
// with River's JobUpdate, and sends nothing if it cannot.
func (e *ender) firstSend(now time.Time) (time.Time, error) {
	e.bound = insertedAt(e.job, now)
	if e.prev != nil && !e.prev.FirstSentBy.IsZero() {
		// Recorded by another process, whose clock may run ahead of
		// this one: never later than now, which Create would refuse.
		e.bound = e.prev.FirstSentBy
		if latest := now.Add(-time.Second); e.bound.After(latest) {
			e.bound = latest
		}
	}
	if resumed(e.job) {
		return e.bound, nil
	}
	if now.Sub(e.bound) > longWait {
		e.bound = now.Add(-time.Second)
		out := &Output{API: e.api, Key: e.key, Outcome: "sending", Attempt: e.job.Attempt, FirstSentBy: e.bound}
		if err := e.stamp(e.ctx, out); err != nil {
			return time.Time{}, fmt.Errorf("saferiver: key %s: recording the first attempt's start before sending: %w", e.key, err)
		}
	}
	return time.Time{}, nil
}

// complete records out, then completes the job and runs hook in one
// transaction. The output stays recorded whatever follows, so the entity
// id is on the job even when the transaction fails. A failure is retried
// (the next attempt finds the same entity under the key); on the job's
// last attempt the job is cancelled with a *ReconcileError, its output
// keeping the entity id: the entity exists, but the business record may
// not hold it.
func complete[TTx any, TArgs river.JobArgs](e *ender, job *river.Job[TArgs], out *Output, hook func(tx TTx) error) error {
	if err := river.RecordOutput(e.ctx, out); err != nil {
		return fmt.Errorf("saferiver: recording the output of key %s: %w", out.Key, err)
	}
	err := completeTx(e.ctx, job, out, hook)
	if err == nil || (job.Attempt < job.MaxAttempts && !remotelyCancelled(e.ctx)) {
		return err
	}
	out.Outcome = "reconcile"
	cause := &ReconcileError{API: out.API, Key: out.Key, Err: err,
		Reason: fmt.Sprintf("the create exists (id %s), but the job's attempt %d could not complete it, and was its last: write the id into the business record", idOf(out), job.Attempt)}
	return e.end(out, cause)
}

// completeTx completes the job and runs hook in one transaction. The
// completion goes first, so that the job's row is locked before the hook
// writes; the run commits only if the job is still its own attempt.
func completeTx[TTx any, TArgs river.JobArgs](ctx context.Context, job *river.Job[TArgs], out *Output, hook func(tx TTx) error) error {
	return inTx(ctx, func(tx TTx) error {
		done, err := river.JobCompleteTx[riverdriver.Driver[TTx]](ctx, tx, job)
		if err != nil {
			return fmt.Errorf("saferiver: key %s created; completing its job: %w", out.Key, err)
		}
		if done.State != rivertype.JobStateCompleted || done.Attempt != job.Attempt {
			return fmt.Errorf("saferiver: key %s created, but job %d is no longer this run's (attempt %d, now %s at attempt %d): not completed here",
				out.Key, job.ID, job.Attempt, done.State, done.Attempt)
		}
		if err := hook(tx); err != nil {
			return fmt.Errorf("saferiver: key %s created; the created hook failed%s: %w", out.Key, sqliteHint(err), err)
		}
		return nil
	})
}

// ender ends a job that created nothing it knows of: a retry, or a
// cancel, after the failure hook.
type ender struct {
	ctx      context.Context
	job      *rivertype.JobRow
	api, key string
	hook     func(ctx context.Context, out *Output, cause error) error // nil: none
	// current reads the job's row as the database holds it now.
	current func(ctx context.Context) (*rivertype.JobRow, error)
	// stamp records out as the job's output at once (River's JobUpdate).
	stamp func(ctx context.Context, out *Output) error
	// bound is no later than the create's first send; set by firstSend.
	bound time.Time
	// prev is the output an earlier attempt recorded, nil when none.
	prev *Output
}

// hookTimeout bounds a failure hook and the checks before a cancel, which
// run even when the job's context has ended.
const hookTimeout = 30 * time.Second

func newEnder[TTx any, TArgs river.JobArgs](ctx context.Context, job *river.Job[TArgs], api, key string,
	hook func(context.Context, TTx, *river.Job[TArgs], *Output, error) error) *ender {
	prev, _ := OutputOf(job.JobRow) // an output that does not decode is taken as none
	e := &ender{ctx: ctx, job: job.JobRow, api: api, key: key, prev: prev,
		current: func(ctx context.Context) (*rivertype.JobRow, error) {
			client, err := river.ClientFromContextSafely[TTx](ctx)
			if err != nil {
				return nil, err
			}
			return client.JobGet(ctx, job.ID)
		},
		stamp: func(ctx context.Context, out *Output) error {
			client, err := river.ClientFromContextSafely[TTx](ctx)
			if err != nil {
				return err
			}
			_, err = client.JobUpdate(ctx, job.ID, &river.JobUpdateParams{Output: out})
			return err
		}}
	if hook != nil {
		e.hook = func(ctx context.Context, out *Output, cause error) error {
			return inTx(ctx, func(tx TTx) error { return hook(ctx, tx, job, out, cause) })
		}
	}
	return e
}

// remotelyCancelled: the job was cancelled from outside while it ran
// (River's Client.JobCancel); River cancels it whatever Work returns.
func remotelyCancelled(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely)
}

// failed turns a create's error into the job's: a retry, or a cancel.
func (e *ender) failed(err error) error {
	v, reason := judge(err)
	if v != retryLater {
		return e.cancel(v, reason, err)
	}
	cancelled := remotelyCancelled(e.ctx)
	if e.job.Attempt < e.job.MaxAttempts && !cancelled {
		return err
	}
	when := fmt.Sprintf("the job's last attempt (%d)", e.job.Attempt)
	if cancelled {
		when = fmt.Sprintf("the job, cancelled from outside during attempt %d,", e.job.Attempt)
	}
	switch {
	case errors.Is(err, saferetry.ErrOutcomeUnknown):
		return e.cancel(reconcileJob, fmt.Sprintf("the outcome is still unknown: %s ended before it was learned: %s", when, lookUp), err)
	case resumed(e.job):
		return e.cancel(reconcileJob, fmt.Sprintf("%s failed, and an earlier attempt may have created it: %s", when, lookUp), err)
	}
	return e.cancel(rejectJob, fmt.Sprintf("%s failed, and none created it", when), err)
}

// invalid cancels a job whose create Create would refuse before sending
// (args inserted without the insert helpers, or edited): the same args
// fail the same way on every attempt. A key that may have expired is
// reconciled instead.
func (e *ender) invalid(err error) error {
	if v, reason := judge(err); v == reconcileJob {
		return e.cancel(v, reason, err)
	}
	return e.cancel(rejectJob, "the job's create is invalid, nothing was sent", err)
}

// cancel records the failure as the job's output, runs the failure hook
// and cancels the job. When an earlier attempt of the job recorded the
// entity (its created hook failed, say), the entity exists, whatever this
// attempt met: the job is to reconcile, its output keeping the id.
func (e *ender) cancel(v verdict, reason string, err error) error {
	out := &Output{API: e.api, Key: e.key, Attempt: e.job.Attempt, StatusCode: statusOf(err), FirstSentBy: e.bound}
	if prev := e.prev; prev != nil && (prev.EntityID != "" || prev.TransferID != 0) {
		out.EntityID, out.TransferID, out.StatusCode, out.TransferStatus = prev.EntityID, prev.TransferID, prev.StatusCode, prev.TransferStatus
		v, reason = reconcileJob, fmt.Sprintf("attempt %d obtained the create (id %s), but the job could not complete it: write the id into the business record",
			prev.Attempt, idOf(prev))
	}
	var cause error
	if v == reconcileJob {
		out.Outcome, cause = "reconcile", &ReconcileError{API: e.api, Key: e.key, Reason: reason, Err: err}
	} else {
		if reason != "" {
			err = fmt.Errorf("%s: %w", reason, err)
		}
		out.Outcome, cause = "rejected", &RejectedError{API: e.api, Key: e.key, Err: err}
	}
	return e.end(out, cause)
}

func idOf(out *Output) string {
	if out.EntityID != "" {
		return out.EntityID
	}
	return fmt.Sprint(out.TransferID)
}

// end records out and cancels the job with cause, once the failure hook
// (if any) has committed. A run that is no longer the job's current
// attempt (River rescued the job and another worker has it) cancels
// nothing: River would apply the cancel to the other run. A failing hook
// fails the attempt instead, until the job's last.
func (e *ender) end(out *Output, cause error) error {
	out.Error = cause.Error()
	_ = river.RecordOutput(e.ctx, out) // it fails only outside a worker; the cancel still stands
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), hookTimeout)
	defer cancel()
	row, err := e.current(ctx)
	if err != nil {
		return fmt.Errorf("saferiver: key %s: reading job %d before cancelling it: %w (it was to be cancelled: %v)", e.key, e.job.ID, err, cause)
	}
	if row.State != rivertype.JobStateRunning || row.Attempt != e.job.Attempt {
		return fmt.Errorf("saferiver: key %s: job %d is no longer this run's (attempt %d, now %s at attempt %d): not cancelled here: %v",
			e.key, e.job.ID, e.job.Attempt, row.State, row.Attempt, cause)
	}
	if e.hook != nil {
		if err := e.hook(ctx, out, cause); err != nil {
			err = fmt.Errorf("saferiver: key %s: the failure hook failed%s: %w", out.Key, sqliteHint(err), err)
			if e.job.Attempt < e.job.MaxAttempts && !remotelyCancelled(e.ctx) {
				return err
			}
			return river.JobCancel(errors.Join(cause, err))
		}
	}
	return river.JobCancel(cause)
}

// inTx runs f in a transaction of the River client's database and
// commits it.
func inTx[TTx any](ctx context.Context, f func(tx TTx) error) error {
	client, err := river.ClientFromContextSafely[TTx](ctx)
	if err != nil {
		return fmt.Errorf("saferiver: %w", err)
	}
	driver := client.Driver()
	execTx, err := driver.GetExecutor().Begin(ctx)
	if err != nil {
		return fmt.Errorf("saferiver: beginning a transaction: %w", err)
	}
	defer func() { _ = execTx.Rollback(context.WithoutCancel(ctx)) }()
	if err := f(driver.UnwrapTx(execTx)); err != nil {
		return err
	}
	return execTx.Commit(ctx)
}

// sqliteHint points at the one mistake that turns a hook's wait into a
// deadline: a write outside tx, which on a database of one connection
// waits for tx's own connection.
func sqliteHint(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return " (a hook that writes through the database handle instead of tx waits forever on SQLite's one connection)"
	}
	return ""
}
