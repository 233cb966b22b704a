package saferiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
)

// InsertOpts are the options of an insert helper.
type InsertOpts struct {
	// Reference is stored in the job's args and handed back to the
	// OnCreated hook: the caller's id for the business record, say.
	Reference string
	// River are River's insert options: queue, priority, max attempts,
	// scheduled time, tags, metadata. UniqueOpts must stay zero: the job
	// is unique by its key.
	River river.InsertOpts
}

// Enqueued is the result of an insert helper.
type Enqueued struct {
	// Key is the create's idempotency key: the Chift request id or the
	// zerohash client_transfer_id, given by the caller or drawn at insert
	// (a UUIDv4). Store it with the business record.
	Key   string
	JobID int64
	// Existing: a job with this key and the same create was inserted
	// before, and is returned; this call inserted nothing.
	Existing bool
	// State is the job's state: available or scheduled for a new job; for
	// an existing one, whatever it reached (a cancelled job stays
	// cancelled: its output says why, and its key is not sent again).
	State rivertype.JobState
}

// KeyInUseError: a job with this key exists (in any state, until River's
// job cleaner deletes it) for another create. Nothing was inserted.
type KeyInUseError struct {
	Key   string
	JobID int64              // the job that holds the key
	State rivertype.JobState // its state when the insert was refused
}

func (e *KeyInUseError) Error() string {
	return fmt.Sprintf("saferiver: idempotency key %q already belongs to job %d (%s), which makes another create; nothing inserted", e.Key, e.JobID, e.State)
}

// InsertChiftCreateTx checks in as Chift.Create would before sending
// (saferetry.ChiftCreate.Prepare), assigns a request id (a UUIDv4) when
// in.RequestID is empty, and inserts a ChiftCreateArgs job with tx, River's
// InsertTx: the job, and so the request id, commits or rolls back with the
// caller's own writes in tx, before a byte can be sent. It returns the
// request id.
//
// Errors, with nothing inserted: the validation error of Prepare (wrapped;
// errors.Is and errors.As see it); a FirstSentAt (the worker sets it from
// the job); River's UniqueOpts in opts; a *KeyInUseError when a job for
// another create (or another Reference) holds the request id. Inserting
// the same create with the same Reference under the same request id again
// returns the first job, Existing set.
func InsertChiftCreateTx[TTx any](ctx context.Context, client *river.Client[TTx], tx TTx, in saferetry.ChiftCreate, opts *InsertOpts) (*Enqueued, error) {
	if !in.FirstSentAt.IsZero() {
		return nil, errors.New("saferiver: ChiftCreate.FirstSentAt is set: the worker sets it from the job's creation time; nothing inserted")
	}
	prepared, err := in.Prepare()
	if err != nil {
		return nil, fmt.Errorf("saferiver: create refused, nothing inserted: %w", err)
	}
	args := ChiftCreateArgs{RequestID: prepared.RequestID, Path: prepared.Path, Body: string(prepared.Body.(json.RawMessage)),
		ConsumerID: prepared.ConsumerID, ConnectionID: prepared.ConnectionID}
	return insertTx(ctx, client, tx, args, args.RequestID, opts, func(a *ChiftCreateArgs) { a.Reference = refOf(opts) },
		func(held *ChiftCreateArgs) bool {
			return held.Reference == refOf(opts) && held.Path == args.Path && held.ConsumerID == args.ConsumerID && held.ConnectionID == args.ConnectionID &&
				held.Body == args.Body
		})
}

// InsertTransferCreateTx checks req as Transfers.Create would before
// sending (saferetry.TransferRequest.Prepare), assigns a client_transfer_id
// (a UUIDv4) when req has none, and inserts a TransferCreateArgs job with
// tx, River's InsertTx: the job, and so the id, commits or rolls back with
// the caller's own writes in tx. It returns the client_transfer_id.
//
// Errors, with nothing inserted: Prepare's "saferetry: invalid transfer
// request: ..." naming every field at fault (wrapped); a FirstSentAt (the
// worker sets it from the job); River's UniqueOpts in opts; a
// *KeyInUseError when a job for another transfer (or another Reference)
// holds the id. Inserting the same transfer with the same Reference under
// the same id again returns the first job, Existing set.
func InsertTransferCreateTx[TTx any](ctx context.Context, client *river.Client[TTx], tx TTx, req saferetry.TransferRequest, opts *InsertOpts) (*Enqueued, error) {
	if !req.FirstSentAt.IsZero() {
		return nil, errors.New("saferiver: TransferRequest.FirstSentAt is set: the worker sets it from the job's creation time; nothing inserted")
	}
	prepared, err := req.Prepare()
	if err != nil {
		return nil, fmt.Errorf("saferiver: transfer refused, nothing inserted: %w", err)
	}
	args := TransferCreateArgs{ClientTransferID: prepared.ClientTransferID, Transfer: prepared}
	return insertTx(ctx, client, tx, args, args.ClientTransferID, opts, func(a *TransferCreateArgs) { a.Reference = refOf(opts) },
		func(held *TransferCreateArgs) bool {
			return held.Reference == refOf(opts) && reflect.DeepEqual(held.Transfer, args.Transfer)
		})
}

func refOf(opts *InsertOpts) string {
	if opts == nil {
		return ""
	}
	return opts.Reference
}

// insertTx inserts args under key, unique by key; same says whether the
// args of a job already holding the key make the same create.
func insertTx[TTx any, TArgs river.JobArgs](ctx context.Context, client *river.Client[TTx], tx TTx, args TArgs, key string,
	opts *InsertOpts, setRef func(*TArgs), same func(held *TArgs) bool) (*Enqueued, error) {
	if client == nil {
		return nil, errors.New("saferiver: the River client is nil; nothing inserted")
	}
	setRef(&args)
	riverOpts := river.InsertOpts{UniqueOpts: uniqueByKey}
	if opts != nil {
		if !reflect.DeepEqual(opts.River.UniqueOpts, river.UniqueOpts{}) {
			return nil, errors.New("saferiver: InsertOpts.River.UniqueOpts is set: a create job is unique by its idempotency key; nothing inserted")
		}
		riverOpts = opts.River
		riverOpts.UniqueOpts = uniqueByKey
	}
	res, err := client.InsertTx(ctx, tx, args, &riverOpts)
	if err != nil {
		return nil, fmt.Errorf("saferiver: inserting the job for key %q: %w", key, err)
	}
	out := &Enqueued{Key: key, JobID: res.Job.ID, Existing: res.UniqueSkippedAsDuplicate, State: res.Job.State}
	if !res.UniqueSkippedAsDuplicate {
		return out, nil
	}
	var held TArgs
	if err := json.Unmarshal(res.Job.EncodedArgs, &held); err != nil {
		return nil, fmt.Errorf("saferiver: reading job %d, which holds key %q: %w", res.Job.ID, key, err)
	}
	if !same(&held) {
		return nil, &KeyInUseError{Key: key, JobID: res.Job.ID, State: res.Job.State}
	}
	return out, nil
}
