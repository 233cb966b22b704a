package saferiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/riverqueue/river/rivertype"
	"net/http"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// Output is what a create job records in its metadata under "output"
// (River's RecordOutput; rivertype.MetadataKeyOutput), when it completes or
// is cancelled.
type Output struct {
	API string `json:"api"` // "chift" or "zerohash"
	Key string `json:"key"` // the request id or client_transfer_id
	// Outcome: "created" (the answer to this job's post), "recovered" (read
	// back after a lost answer: Chift's monitoring log, zerohash's lookup),
	// "reposted" (zerohash: the lookup found nothing and a repost created
	// it); for a cancelled job "rejected" or "reconcile" (see RejectedError
	// and ReconcileError; a "reconcile" with an id: the entity exists). A
	// job still retrying may hold the output of its latest attempt that
	// got as far as the entity.
	Outcome string `json:"outcome"`
	// EntityID is Chift's id of the created entity; TransferID zerohash's
	// id of the transfer.
	EntityID   string `json:"entity_id,omitempty"`
	TransferID int64  `json:"transfer_id,omitempty"`
	// StatusCode is the HTTP status of the create: Chift's answer, or the
	// original status its log kept when recovered; zerohash's 201 when
	// created or reposted, omitted when recovered (zerohash keeps none);
	// the refusal's status for a rejected job.
	StatusCode int `json:"status_code,omitempty"`
	// TransferStatus is zerohash's status of the transfer, e.g. "approved".
	TransferStatus string `json:"transfer_status,omitempty"`
	Attempt        int    `json:"attempt"`         // the job attempt that ended it, from 1
	Error          string `json:"error,omitempty"` // a cancelled job's error
	// FirstSentBy is no later than the create's first send: the job's
	// insert, or the start of its first attempt when that began more than
	// an hour after the insert (recorded then, Outcome "sending"). A
	// resumed attempt passes it to Create as FirstSentAt.
	FirstSentBy time.Time `json:"first_sent_by,omitzero"`
}

// RejectedError cancels a create job: the API refused the create for good,
// and created nothing: a 4xx answer (validation, a business conflict such
// as Chift's ERROR_INVOICE_NUMBER_ALREADY_USED), an idempotency key spent
// or used by another request (saferetry.ErrRequestIDSpent,
// saferetry.ErrDuplicateClientTransferID), or args the worker cannot send.
// The same job would meet the same answer again; correct the create and
// insert a new job. It also ends a job whose last attempt failed in a way
// that proves nothing was created (rate limited, the API unreachable):
// insert a new job once the cause is gone. Err is the SDK's typed error.
type RejectedError struct {
	API, Key string
	Err      error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("saferiver: %s create under key %q rejected, nothing created: %v", e.API, e.Key, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// ReconcileError cancels a create job that needs a person: the key may
// have outlived the API's memory of it (saferetry.ErrKeyExpired:
// zerohash's 72 h, Chift's 6 months), an entity found under the key may or
// may not be this create's, the API recorded a failure of its own that may
// have left the entity, or the job's attempts ran out while the outcome
// was unknown: then look Key up in the API's records
// (Transfers.FindByClientTransferID, Chift.LookupTransaction) before
// anything is created under a new key. Or the entity exists, its id in the
// job's Output, but the job's last attempt could not complete it (the
// created hook kept failing): write the id into the business record.
// Reason says which.
type ReconcileError struct {
	API, Key string
	Reason   string
	Err      error
}

func (e *ReconcileError) Error() string {
	return fmt.Sprintf("saferiver: %s create under key %q needs manual reconciliation: %s: %v", e.API, e.Key, e.Reason, e.Err)
}

// lookUp is what a ReconcileError asks of someone when the entity is not
// known.
const lookUp = "look the key up in the API's records before creating anything under a new key"

func (e *ReconcileError) Unwrap() error { return e.Err }

// verdict is what a failed create calls for.
type verdict int

const (
	retryLater   verdict = iota // the same key, on River's backoff
	rejectJob                   // cancel: RejectedError
	reconcileJob                // cancel: ReconcileError
)

// judge reads the error of Chift.Create or Transfers.Create. The checks
// run from the most specific: a definite answer matched first, outcome
// unknown after, and whatever proves nothing is retried under the same
// key, which the key makes safe.
func judge(err error) (verdict, string) {
	var (
		mismatch *saferetry.TransferMismatchError
		reused   *saferetry.ChiftRequestIDReusedError
		spent    *saferetry.ChiftRequestIDSpentError
		apiErr   *saferetry.APIError
	)
	switch {
	case errors.Is(err, saferetry.ErrKeyExpired):
		return reconcileJob, "the key may have expired at the API: " + lookUp
	case errors.As(err, &mismatch):
		if mismatch.MaybeCreated {
			return reconcileJob, "the transfer found under the key may not be this create's, and this create's may exist: " + lookUp
		}
		return rejectJob, ""
	case errors.As(err, &reused):
		return rejectJob, ""
	case errors.As(err, &spent):
		if spent.OriginalStatus >= 500 {
			return reconcileJob, fmt.Sprintf("Chift recorded %d for the request, which may have left the entity in the connected system: %s", spent.OriginalStatus, lookUp)
		}
		return rejectJob, ""
	case errors.Is(err, saferetry.ErrOutcomeUnknown):
		return retryLater, ""
	case errors.Is(err, saferetry.ErrInvalidKey):
		return rejectJob, ""
	case errors.As(err, &apiErr) && definiteRefusal(apiErr.StatusCode):
		return rejectJob, ""
	}
	return retryLater, ""
}

// definiteRefusal: a 4xx that refuses the create itself. Authentication
// and authorization (401, 403, 407), a timeout (408), too early (425) and
// a rate limit (429) say nothing about the create: it is retried.
func definiteRefusal(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired, http.StatusRequestTimeout,
		http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// statusOf is the HTTP status an error answered with, 0 when none.
func statusOf(err error) int {
	var spent *saferetry.ChiftRequestIDSpentError
	if errors.As(err, &spent) {
		return spent.OriginalStatus
	}
	var apiErr *saferetry.APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode
	}
	return 0
}

// OutputOf decodes the Output a create job recorded (River's
// JobRow.Output), or nil when it recorded none: a job not yet ended, or
// discarded by River after its worker died on the last attempt.
func OutputOf(job *rivertype.JobRow) (*Output, error) {
	raw := job.Output()
	if len(raw) == 0 {
		return nil, nil
	}
	var out Output
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("saferiver: job %d's output: %w", job.ID, err)
	}
	return &out, nil
}
