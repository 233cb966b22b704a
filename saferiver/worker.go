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
	// ZeroHash sends TransferCreateArgs jobs; it must be made with
	// saferetry.WithZeroHashRequestID(). Nil: no transfer worker is added.
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
//     unknown.
//
// An attempt after the first (River's Attempt above 1, or an error
// recorded) resumes: the create's FirstSentAt is when the job was
// inserted, which is before its first send, on this process's clock
// whatever the database's clock says (see firstSentAt). Transfers.Create then looks the id up before it posts again,
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
	if cfg.OnTransferCreated != nil && cfg.ZeroHash == nil {
		return errors.New("saferiver: AddWorkers: OnTransferCreated is set but Config.ZeroHash is nil")
	}
	if cfg.Chift != nil {
		if err := river.AddWorkerSafely(workers, &chiftWorker[TTx]{client: cfg.Chift, hook: cfg.OnChiftCreated}); err != nil {
			return fmt.Errorf("saferiver: AddWorkers: %w", err)
		}
	}
	if cfg.ZeroHash != nil {
		if err := river.AddWorkerSafely(workers, &transferWorker[TTx]{client: cfg.ZeroHash, hook: cfg.OnTransferCreated}); err != nil {
			return fmt.Errorf("saferiver: AddWorkers: %w", err)
		}
	}
	return nil
}

type chiftWorker[TTx any] struct {
	river.WorkerDefaults[ChiftCreateArgs]
	client *saferetry.Client
	hook   func(context.Context, TTx, *river.Job[ChiftCreateArgs], *saferetry.ChiftCreated) error
}

func (w *chiftWorker[TTx]) Work(ctx context.Context, job *river.Job[ChiftCreateArgs]) error {
	key := job.Args.RequestID
	if key == "" {
		return cancel(ctx, job.JobRow, "chift", key, rejectJob, "", errors.New("the job's request_id is empty: insert it with InsertChiftCreateTx, which assigns one"))
	}
	in := job.Args.create(firstSentAt(job.JobRow, time.Now()))
	if _, err := in.Prepare(); err != nil {
		return invalid(ctx, job.JobRow, "chift", key, err)
	}
	created, err := w.client.Chift.Create(ctx, in)
	if err != nil {
		return failed(ctx, job.JobRow, "chift", key, err)
	}
	outcome := "created"
	if created.Recovered {
		outcome = "recovered"
	}
	out := &Output{API: "chift", Key: key, Outcome: outcome, EntityID: created.EntityID, StatusCode: created.StatusCode, Attempt: job.Attempt}
	return complete(ctx, job, out, func(tx TTx) error {
		if w.hook == nil {
			return nil
		}
		return w.hook(ctx, tx, job, created)
	})
}

type transferWorker[TTx any] struct {
	river.WorkerDefaults[TransferCreateArgs]
	client *saferetry.Client
	hook   func(context.Context, TTx, *river.Job[TransferCreateArgs], *saferetry.Transfer) error
}

func (w *transferWorker[TTx]) Work(ctx context.Context, job *river.Job[TransferCreateArgs]) error {
	key := job.Args.ClientTransferID
	req := job.Args.Transfer
	switch {
	case key == "":
		return cancel(ctx, job.JobRow, "zerohash", key, rejectJob, "", errors.New("the job's client_transfer_id is empty: insert it with InsertTransferCreateTx, which assigns one"))
	case req.ClientTransferID != "" && req.ClientTransferID != key:
		return cancel(ctx, job.JobRow, "zerohash", key, rejectJob, "", fmt.Errorf("the job's transfer names client_transfer_id %s, the job %s", req.ClientTransferID, key))
	}
	req.ClientTransferID, req.FirstSentAt = key, firstSentAt(job.JobRow, time.Now())
	if _, err := req.Prepare(); err != nil {
		return invalid(ctx, job.JobRow, "zerohash", key, err)
	}
	t, err := w.client.Transfers.Create(ctx, req)
	if err != nil {
		return failed(ctx, job.JobRow, "zerohash", key, err)
	}
	out := &Output{API: "zerohash", Key: key, Outcome: t.Outcome.String(), TransferID: t.ID, TransferStatus: t.Status, Attempt: job.Attempt}
	if t.Outcome != saferetry.OutcomeRecovered {
		out.StatusCode = 201
	}
	return complete(ctx, job, out, func(tx TTx) error {
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

// firstSentAt is the FirstSentAt of the job's create: zero on the first
// attempt; afterwards a time no later than the job's insert, on this
// process's clock. The job's age is read on the database's clock alone
// (River stamps created_at at insert and attempted_at when it hands the
// job over, both with the database's now), and taken from this clock's
// now, less a second for the time between the hand-over and this call:
// a database clock that runs ahead or behind this one moves both stamps
// alike.
func firstSentAt(job *rivertype.JobRow, now time.Time) time.Time {
	if !resumed(job) {
		return time.Time{}
	}
	var age time.Duration
	if job.AttemptedAt != nil {
		age = max(job.AttemptedAt.Sub(job.CreatedAt), 0)
	} else if job.CreatedAt.Before(now) {
		age = now.Sub(job.CreatedAt)
	}
	return now.Add(-age - time.Second)
}

// complete records out, then completes the job and runs hook in one
// transaction. The output stays recorded whatever follows, so the entity
// id is on the job even when the transaction fails. A failure is retried
// (the next attempt finds the same entity under the key), and on the
// job's last attempt cancels it with a *ReconcileError: the entity exists
// but the business record may not hold it.
func complete[TTx any, TArgs river.JobArgs](ctx context.Context, job *river.Job[TArgs], out *Output, hook func(tx TTx) error) error {
	if err := river.RecordOutput(ctx, out); err != nil {
		return fmt.Errorf("saferiver: recording the output of key %s: %w", out.Key, err)
	}
	err := completeTx(ctx, job, out, hook)
	if err == nil || job.Attempt < job.MaxAttempts {
		return err
	}
	id := out.EntityID
	if id == "" {
		id = fmt.Sprint(out.TransferID)
	}
	cause := &ReconcileError{API: out.API, Key: out.Key, Err: err,
		Reason: fmt.Sprintf("the create exists (id %s), but the job's last attempt (%d) could not complete it with the OnCreated hook", id, job.Attempt)}
	out.Error = cause.Error()
	_ = river.RecordOutput(ctx, out)
	return river.JobCancel(cause)
}

// completeTx completes the job and runs hook in one transaction. The
// completion goes first, so that the job's row is locked before the hook
// writes; the run commits only if the job is still its own attempt.
func completeTx[TTx any, TArgs river.JobArgs](ctx context.Context, job *river.Job[TArgs], out *Output, hook func(tx TTx) error) error {
	client, err := river.ClientFromContextSafely[TTx](ctx)
	if err != nil {
		return fmt.Errorf("saferiver: completing the job for key %s: %w", out.Key, err)
	}
	driver := client.Driver()
	execTx, err := driver.GetExecutor().Begin(ctx)
	if err != nil {
		return fmt.Errorf("saferiver: key %s created; beginning the transaction that completes its job: %w", out.Key, err)
	}
	defer func() { _ = execTx.Rollback(context.WithoutCancel(ctx)) }()
	tx := driver.UnwrapTx(execTx)
	done, err := river.JobCompleteTx[riverdriver.Driver[TTx]](ctx, tx, job)
	if err != nil {
		return fmt.Errorf("saferiver: key %s created; completing its job: %w", out.Key, err)
	}
	if done.State != rivertype.JobStateCompleted || done.Attempt != job.Attempt {
		return fmt.Errorf("saferiver: key %s created, but job %d is no longer this run's (attempt %d, now %s at attempt %d): not completed here",
			out.Key, job.ID, job.Attempt, done.State, done.Attempt)
	}
	if err := hook(tx); err != nil {
		return fmt.Errorf("saferiver: key %s created; the OnCreated hook failed, and the job will run again: %w", out.Key, err)
	}
	if err := execTx.Commit(ctx); err != nil {
		return fmt.Errorf("saferiver: key %s created; committing its job's completion: %w", out.Key, err)
	}
	return nil
}

// failed turns a create's error into the job's: a retry, or a cancel.
func failed(ctx context.Context, job *rivertype.JobRow, api, key string, err error) error {
	v, reason := judge(err)
	if v == retryLater {
		if job.Attempt < job.MaxAttempts {
			return err
		}
		if errors.Is(err, saferetry.ErrOutcomeUnknown) {
			v, reason = reconcileJob, fmt.Sprintf("the outcome is still unknown after the job's last attempt (%d)", job.Attempt)
		} else {
			v, reason = rejectJob, fmt.Sprintf("the job's last attempt (%d) failed, and none created it", job.Attempt)
		}
	}
	return cancel(ctx, job, api, key, v, reason, err)
}

// invalid cancels a job whose create Create would refuse before sending
// (args inserted without the insert helpers, or edited): the same args
// fail the same way on every attempt. A key that may have expired is
// reconciled instead.
func invalid(ctx context.Context, job *rivertype.JobRow, api, key string, err error) error {
	if v, reason := judge(err); v == reconcileJob {
		return cancel(ctx, job, api, key, v, reason, err)
	}
	return cancel(ctx, job, api, key, rejectJob, "the job's create is invalid, nothing was sent", err)
}

// cancel records the failure as the job's output and cancels the job.
func cancel(ctx context.Context, job *rivertype.JobRow, api, key string, v verdict, reason string, err error) error {
	out := &Output{API: api, Key: key, Attempt: job.Attempt, StatusCode: statusOf(err)}
	var cause error
	if v == reconcileJob {
		out.Outcome, cause = "reconcile", &ReconcileError{API: api, Key: key, Reason: reason, Err: err}
	} else {
		if reason != "" {
			err = fmt.Errorf("%s: %w", reason, err)
		}
		out.Outcome, cause = "rejected", &RejectedError{API: api, Key: key, Err: err}
	}
	out.Error = cause.Error()
	_ = river.RecordOutput(ctx, out) // only outside a worker can it fail; the cancel still stands
	return river.JobCancel(cause)
}
