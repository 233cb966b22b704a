package saferiver

import (
	"encoding/json"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
)

// Job kinds, as River stores them in river_job.kind.
const (
	ChiftCreateKind    = "saferetry_chift_create"
	TransferCreateKind = "saferetry_transfer_create"
)

// ChiftCreateArgs is a job that makes one Chift create with Chift.Create.
// Insert it with InsertChiftCreateTx, which checks the create and assigns
// RequestID before the job exists; the worker refuses args whose
// RequestID is empty. The fields are saferetry.ChiftCreate's, with Body
// the JSON text every attempt posts.
type ChiftCreateArgs struct {
	// RequestID is the X-Chift-Client-RequestId of every post of the job,
	// on every attempt and after every rescue. It is the job's unique key:
	// River inserts at most one job per RequestID while a job with it is
	// kept (see InsertChiftCreateTx).
	RequestID string `json:"request_id" river:"unique"`
	Path      string `json:"path"`
	// Body is the JSON text of the create's body, kept as a string so
	// that every attempt posts the same bytes: stored as JSON, Postgres's
	// jsonb would reorder an object's keys and rewrite its numbers.
	Body         string `json:"body"`
	ConsumerID   string `json:"consumer_id"`
	ConnectionID string `json:"connection_id"`
	// Reference is the caller's own, never sent: the id of the business
	// record the create belongs to, say, for OnChiftCreated to find it.
	Reference string `json:"reference,omitempty"`
}

// Kind is ChiftCreateKind.
func (ChiftCreateArgs) Kind() string { return ChiftCreateKind }

// InsertOpts makes the job unique by RequestID in every job state.
func (ChiftCreateArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: uniqueByKey}
}

func (a *ChiftCreateArgs) create(firstSentAt time.Time) saferetry.ChiftCreate {
	return saferetry.ChiftCreate{Path: a.Path, Body: json.RawMessage(a.Body), ConsumerID: a.ConsumerID, ConnectionID: a.ConnectionID,
		RequestID: a.RequestID, FirstSentAt: firstSentAt}
}

// TransferCreateArgs is a job that makes one zerohash transfer with
// Transfers.Create. Insert it with InsertTransferCreateTx, which checks
// the request and assigns the client_transfer_id before the job exists.
type TransferCreateArgs struct {
	// ClientTransferID is the transfer's client_transfer_id on every
	// attempt and after every rescue, and the job's unique key (see
	// InsertTransferCreateTx). Transfer.ClientTransferID holds the same.
	ClientTransferID string                    `json:"client_transfer_id" river:"unique"`
	Transfer         saferetry.TransferRequest `json:"transfer"`
	// Reference is the caller's own, never sent, as in ChiftCreateArgs.
	Reference string `json:"reference,omitempty"`
}

// Kind is TransferCreateKind.
func (TransferCreateArgs) Kind() string { return TransferCreateKind }

// InsertOpts makes the job unique by ClientTransferID in every job state.
func (TransferCreateArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: uniqueByKey}
}

// uniqueByKey: one job per key, whatever state the first one is in. A
// cancelled job's key stays taken: its create may need reconciling, and a
// second job under the key could post it again after the server forgot
// the key.
var uniqueByKey = river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStateCancelled, rivertype.JobStateCompleted, rivertype.JobStateDiscarded,
	rivertype.JobStatePending, rivertype.JobStateRetryable, rivertype.JobStateRunning, rivertype.JobStateScheduled,
}}
