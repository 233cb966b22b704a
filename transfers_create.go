package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// postResult classifies the answer to one POST /transfers.
type postResult int

const (
	postCreated      postResult = iota
	postRejected                // a definite answer: the transfer was not created
	postDuplicate               // zerohash says the client_transfer_id exists
	postNotProcessed            // provably not processed: post again
	postAmbiguous               // may or may not exist: look it up first
	postUnsent                  // the context ended before the POST was handed on
)

// Bounds of one Create beside its context and the Transport's retry
// budget: how many POSTs it makes (the first and the reposts after a
// lookup found nothing or a failure proved nothing was processed), and how
// many times one lookup is repeated.
const (
	maxTransferPosts = 4
	lookupRetries    = 8
)

// Create creates a transfer exactly once, following zerohash's recipe
// (docs.zerohash.com/docs/request-ids). It posts once; after an ambiguous
// failure (timeout, connection lost after sending, 500, 502, 504, an error
// that does not prove the POST unsent) it does not repost but looks the
// client_transfer_id up, and reposts with the same id only if nothing is
// there. A "not an unique client_transfer_id" answer means the id is
// taken: it is looked up (again while not yet visible). The result's
// Outcome says which path was taken.
//
// The 201 to its own POST is the transfer, whatever the server made of the
// fields. A transfer found by a lookup is taken as this create's only if it
// provably is: a POST of this create (or of the earlier run FirstSentAt
// names) may have been processed; zerohash created it no earlier than this
// id was first sent, less TransferClockSkewMargin; and it has the accounts,
// asset and amount asked for (codes compared without regard to case, the
// amount by value). Otherwise the error is a *TransferMismatchError naming
// what differs (ErrDuplicateClientTransferID).
//
// Its lookups and reposts are retries to the Transport's retry budget:
// each draws from it, and when it is spent Create stops. Before a repost it
// waits what the last answer asked (Retry-After, however long; after a 429
// without one, ZeroHashRateLimitWait), and stops at once if that does not
// fit the context.
//
// A definite failure is an *APIError (zerohash's answer), or a
// *NotCreatedError (ErrTransferNotCreated; ErrRateLimited after 429s) when
// every POST proved unprocessed or none was sent: a context cancelled
// before the first POST gives one that matches the context's error. When a
// POST may have been processed and the truth cannot be learned within the
// context, the budget and the limits, the error matches ErrOutcomeUnknown
// and carries the client_transfer_id (KeyFromError).
//
// Pass ctx with a deadline: zerohash documents no time limit and the SDK
// sets no attempt timeout for it, so without a deadline, an http.Client
// Timeout or WithAttemptTimeout, a server that accepts the connection and
// never answers holds Create for ever. When ctx ends, Create returns at
// once. On a client made for Chift, or for neither API, Create returns an
// error before anything is sent.
func (s *TransfersService) Create(ctx context.Context, req TransferRequest) (*Transfer, error) {
	if err := s.client.requireAPI("Transfers.Create", "zerohash"); err != nil {
		return nil, err
	}
	clock, offset := s.signingClock()
	req, err := req.prepare(clock)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("saferetry: encoding transfer: %w", err)
	}
	r := &createRun{s: s, cfg: &s.client.transport.cfg, req: &req, body: body,
		now: func() time.Time { return clock().Add(offset) }}
	if !req.FirstSentAt.IsZero() {
		r.firstSent, r.maybeProcessed = req.FirstSentAt.Add(offset), true
	}
	start := CreateStart{API: "zerohash", Key: req.ClientTransferID, Resumed: r.maybeProcessed}
	return observeCreate(ctx, &s.client.transport.cfg, start, r.run, func(t *Transfer) CreateDone {
		d := CreateDone{Posts: r.posts, Lookups: r.lookups, BudgetExhausted: r.budgetRefused}
		if t != nil {
			d.Outcome = t.Outcome.String()
		}
		return d
	})
}

// Prepare checks the request as Transfers.Create does before anything is
// sent (FirstSentAt on the local clock) and returns it with a new UUIDv4
// ClientTransferID when it had none. A durable layer stores the result
// (the saferiver module's jobs do), so that every later Create sends it
// under the same id. The error is the one Create returns for the same
// request: "saferetry: invalid transfer request: ..." naming every field
// at fault.
func (r TransferRequest) Prepare() (TransferRequest, error) {
	return r.prepare(time.Now)
}

func (r TransferRequest) prepare(now func() time.Time) (TransferRequest, error) {
	if err := r.validate(now); err != nil {
		return TransferRequest{}, err
	}
	if r.ClientTransferID == "" {
		id, err := newUUIDKey()
		if err != nil {
			return TransferRequest{}, fmt.Errorf("saferetry: generating client_transfer_id: %w", err)
		}
		r.ClientTransferID = id
	}
	return r, nil
}

// createRun is one Create: the request, its encoded body, and what its
// POSTs have shown so far.
type createRun struct {
	s    *TransfersService
	cfg  *config
	req  *TransferRequest
	body []byte
	now  func() time.Time // zerohash's clock, as the signatures estimate it
	// firstSent is when this id was first sent, on zerohash's clock as now
	// estimates it: FirstSentAt, or this run's first POST.
	firstSent time.Time
	// maybeProcessed: a POST under this id, of this run or of the earlier
	// one FirstSentAt names, may have been processed. Until then nothing
	// found under the id is this create's, and every failure is definite.
	maybeProcessed bool
	posts          int
	lookups        int           // lookups sent, polls included
	budgetRefused  bool          // the retry budget refused a repost or a lookup
	lastErr        error         // the last POST's failure or error answer
	retryAfter     time.Duration // the wait the last POST's answer asked for
	result         *Transfer     // set by readCreated
}

func (r *createRun) run(ctx context.Context) (*Transfer, error) {
	outcome := OutcomeCreated
	// A resumed create had an earlier POST of unknown outcome.
	next := postAmbiguous
	if !r.maybeProcessed {
		next = r.post(ctx)
	}
	schedule := r.cfg.backOff(0)
	for {
		var wait time.Duration
		switch next {
		case postCreated:
			r.result.Outcome = outcome
			return r.result, nil
		case postRejected:
			return nil, r.rejected()
		case postUnsent:
			return nil, r.stop("the context ended before the transfer was sent", nil)
		case postDuplicate:
			return r.recover(ctx)
		case postAmbiguous:
			t, err := r.lookup(ctx, false)
			if !errors.Is(err, ErrTransferNotFound) {
				return t, err
			}
			outcome = OutcomeReposted
		case postNotProcessed:
			wait = max(schedule.NextBackOff(), r.retryAfter)
		}
		if err := r.readyRepost(ctx, wait); err != nil {
			return nil, err
		}
		next = r.post(ctx)
	}
}

// post sends one POST, noting when the id was first sent and whether it
// may now exist.
func (r *createRun) post(ctx context.Context) postResult {
	if r.firstSent.IsZero() {
		r.firstSent = r.now()
	}
	r.posts++
	result := r.postAndClassify(withStep(ctx, StepPost))
	if result == postAmbiguous || result == postCreated {
		r.maybeProcessed = true
	}
	return result
}

// readyRepost decides whether another POST may go and waits for it: posts
// left, the uniqueness window, the wait asked for, the context and the
// retry budget.
func (r *createRun) readyRepost(ctx context.Context, wait time.Duration) error {
	if r.posts >= maxTransferPosts {
		return r.stop(fmt.Sprintf("gave up after %d posts", r.posts), nil)
	}
	if age := r.now().Sub(r.firstSent); age >= TransferUniquenessWindow-transferRepostMargin {
		// zerohash would take the id as new and could create a second
		// transfer.
		reason := fmt.Sprintf("first sent %s ago, too close to zerohash's 72h uniqueness window to post again safely", age.Round(time.Minute))
		if r.maybeProcessed {
			return r.unknown(reason, withCause(ErrKeyExpired, r.lastErr))
		}
		return r.stop(reason, nil)
	}
	if reason, cause := r.pace(ctx, wait); reason != "" {
		return r.stop(reason+" before the next post", cause)
	}
	return nil
}

// pace readies one more request of this create beyond its first POST: the
// wait must fit the context, the Transport's retry budget must grant a
// retry, and the wait must pass. It returns why the request may not go
// (and the error behind it, if any), or "".
func (r *createRun) pace(ctx context.Context, wait time.Duration) (string, error) {
	if err := ctx.Err(); err != nil {
		return "the context ended", err
	}
	if !fitsBefore(ctx, wait) {
		return fmt.Sprintf("the context ends within the %v wait", wait), nil
	}
	if !r.s.client.transport.drawCreateRetry() {
		r.budgetRefused = true
		return "the Transport's retry budget is spent", ErrRetryBudgetExhausted
	}
	if err := r.s.wait(ctx, wait); err != nil {
		return "the context ended", err
	}
	return "", nil
}

// wait waits d or until ctx ends.
func (s *TransfersService) wait(ctx context.Context, d time.Duration) error {
	if s.pause != nil {
		return s.pause(ctx, d)
	}
	if d <= 0 {
		return ctx.Err()
	}
	return sleep(ctx, d)
}

// stop ends the create without a transfer: definitely not created while
// no POST may have been processed, of unknown outcome once one may have.
func (r *createRun) stop(reason string, cause error) error {
	if !r.maybeProcessed {
		return &NotCreatedError{ClientTransferID: r.req.ClientTransferID, Reason: reason, RetryAfter: r.retryAfter,
			Posts: r.posts, Cause: cause, Err: r.lastErr}
	}
	return r.unknown(reason, withCause(cause, r.lastErr))
}

// rejected is the error for a definite answer to a POST; after an earlier
// POST that may have been processed, that answer does not settle it.
func (r *createRun) rejected() error {
	if !r.maybeProcessed {
		return &refusedCreate{key: r.req.ClientTransferID, err: r.lastErr}
	}
	return r.unknown("an earlier post may have created it, and a repost was refused", r.lastErr)
}

func (r *createRun) unknown(reason string, err error) error {
	return &OutcomeError{Key: r.req.ClientTransferID, Reason: reason, Err: err}
}

// withCause is cause, with the last failure when there is one.
func withCause(cause, last error) error {
	switch {
	case cause == nil:
		return last
	case last == nil:
		return cause
	}
	return fmt.Errorf("%w; last failure: %w", cause, last)
}

// recover resolves zerohash's "not unique" answer. While no POST of this
// create may have been processed, the transfer holding the id is
// another's; otherwise the id is looked up, again while not yet visible.
func (r *createRun) recover(ctx context.Context) (*Transfer, error) {
	if !r.maybeProcessed {
		return nil, r.heldByAnother(ctx)
	}
	t, err := r.lookup(ctx, true)
	if errors.Is(err, ErrTransferNotFound) {
		return nil, r.unknown("zerohash reports the id as used, but the lookup does not find it", err)
	}
	return t, err
}

// heldByAnother is the error for a "not unique" answer to a create none of
// whose POSTs may have been processed; one lookup, if the budget allows,
// names the transfer holding the id.
func (r *createRun) heldByAnother(ctx context.Context) error {
	if reason, _ := r.pace(ctx, 0); reason == "" {
		r.lookups++
		if found, _, err := r.s.findAll(withStep(ctx, StepLookup), r.req.ClientTransferID); err == nil {
			return r.mismatch(&found[0])
		}
	}
	diffs, _ := r.differences(nil)
	return &TransferMismatchError{ClientTransferID: r.req.ClientTransferID, Differences: diffs, Err: r.duplicateAnswer()}
}

// lookup asks GET /transfers?client_transfer_id=, repeating failed lookups
// (and a not-found one too, when untilFound) after the schedule's wait or
// the one the answer asked for. It returns this create's transfer,
// ErrTransferNotFound, a *TransferMismatchError, or ErrOutcomeUnknown.
func (r *createRun) lookup(ctx context.Context, untilFound bool) (*Transfer, error) {
	schedule := r.cfg.backOff(0)
	var (
		lastErr error
		wait    time.Duration
	)
	for n := range lookupRetries + 1 {
		if reason, cause := r.pace(ctx, wait); reason != "" {
			last := lastErr
			if last == nil {
				last = r.lastErr // the POST's failure that called for the lookup
			}
			return nil, r.unknown(reason+" before the id could be looked up", withCause(cause, last))
		}
		found, resp, err := r.s.findAll(withStep(ctx, lookupStep(n)), r.req.ClientTransferID)
		r.lookups++
		lastErr = err
		switch {
		case err == nil:
			return r.claim(found)
		case errors.Is(err, ErrTransferNotFound) && !untilFound:
			return nil, err
		case isDefiniteRejection(err):
			return nil, r.unknown("the lookup was refused", err)
		}
		wait = max(schedule.NextBackOff(), zeroHashWait(resp))
	}
	if errors.Is(lastErr, ErrTransferNotFound) {
		return nil, lastErr
	}
	return nil, r.unknown("the lookup kept failing", lastErr)
}

// claim returns the transfer among found that is this create's, or the
// error saying why the one zerohash lists first (its newest) is not.
func (r *createRun) claim(found []Transfer) (*Transfer, error) {
	for i := range found {
		if diffs, _ := r.differences(&found[i]); len(diffs) == 0 {
			t := found[i]
			t.Outcome = OutcomeRecovered
			return &t, nil
		}
	}
	return nil, r.mismatch(&found[0])
}

// differences says why t is not this create's transfer; none: it is. It
// is only if a POST of this create may have been processed, zerohash
// created it no earlier than this id was first sent (less
// TransferClockSkewMargin), and it has the accounts, asset and amount
// asked for. nil t: only what does not depend on the transfer.
func (r *createRun) differences(t *Transfer) (diffs []string, fieldsDiffer bool) {
	if t != nil {
		diffs = r.req.fieldDifferences(t)
		fieldsDiffer = len(diffs) > 0
		earliest := r.firstSent.Add(-TransferClockSkewMargin)
		switch {
		case t.CreatedAt.IsZero():
			diffs = append(diffs, "created_at is absent, so it cannot be shown to follow this id's first send")
		case t.CreatedAt.Before(earliest):
			diffs = append(diffs, fmt.Sprintf("created_at %s is %v before this id was first sent (%s, by zerohash's clock as the signatures estimate it; %v allowed for clock skew)",
				t.CreatedAt.UTC().Format(time.RFC3339), r.firstSent.Sub(t.CreatedAt).Round(time.Second),
				r.firstSent.UTC().Format(time.RFC3339), TransferClockSkewMargin))
		}
	}
	if !r.maybeProcessed {
		diffs = append(diffs, fmt.Sprintf("none of this create's %d post(s) can have been processed (each was answered 429, 503 with zh-allow-retry, \"not unique\", or never sent)", r.posts))
	}
	return diffs, fieldsDiffer
}

// mismatch is the error for a transfer under this id that is not this
// create's. This create's own may exist as well only if a POST of it may
// have been processed and t could not have kept zerohash from taking the
// id: t is older than the uniqueness window at the latest POST.
func (r *createRun) mismatch(t *Transfer) *TransferMismatchError {
	diffs, fieldsDiffer := r.differences(t)
	windowStart := r.now().Add(TransferClockSkewMargin - TransferUniquenessWindow)
	return &TransferMismatchError{
		ClientTransferID: r.req.ClientTransferID, TransferID: t.ID, Differences: diffs,
		// With the fields alike the transfer may be ours after all (a
		// FirstSentAt taken on another clock, a repeat of this create
		// without FirstSentAt, a job redelivered): unknown, never
		// "someone else's, use a new id", which could pay out twice.
		MaybeCreated: !fieldsDiffer || (r.maybeProcessed && !t.CreatedAt.After(windowStart)),
		Err:          r.duplicateAnswer(), fieldsDiffer: fieldsDiffer,
	}
}

// duplicateAnswer is zerohash's "not unique" answer to the last POST, if
// that was the answer; the failure of an ambiguous POST is not carried
// into a definite error.
func (r *createRun) duplicateAnswer() error {
	if errors.Is(r.lastErr, ErrDuplicateClientTransferID) {
		return r.lastErr
	}
	return nil
}

// zeroHashWait is the wait a zerohash answer asks for before the next
// request (askedWait), however long; 0 when it asks none.
func zeroHashWait(resp *http.Response) time.Duration {
	d, _ := askedWait(resp, true)
	return d
}

// isDefiniteRejection: a 4xx that repeating will not change (bad
// credentials, say); 404, 408 and 429 are not.
func isDefiniteRejection(err error) bool {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.StatusCode {
	case http.StatusNotFound, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return apiErr.StatusCode >= 400 && apiErr.StatusCode < 500
}

// postAndClassify sends one POST /transfers (the transport retries it only
// where nothing can have been processed) and says what its answer means.
func (r *createRun) postAndClassify(ctx context.Context) postResult {
	r.retryAfter = 0
	req, err := r.s.client.NewRequest(ctx, http.MethodPost, "transfers", json.RawMessage(r.body))
	if err != nil {
		r.lastErr = err
		return postRejected
	}
	resp, err := r.s.client.httpClient.Do(req)
	if err != nil {
		err = redactError(err)
		r.lastErr = err
		switch {
		case !provenUnsent(err):
			// ErrOutcomeUnknown, or an error whose type was lost: it
			// proves nothing.
			return postAmbiguous
		case ctx.Err() != nil:
			return postUnsent
		}
		return postNotProcessed
	}
	defer drainAndClose(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return r.readCreated(resp)
	}
	apiErr := CheckResponse(resp).(*APIError)
	r.lastErr = apiErr
	result := classifyTransferAnswer(resp, apiErr)
	if result == postNotProcessed {
		r.retryAfter = zeroHashWait(resp)
	}
	return result
}

func classifyTransferAnswer(resp *http.Response, apiErr *APIError) postResult {
	switch {
	case errors.Is(apiErr, ErrDuplicateClientTransferID):
		return postDuplicate
	case resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Zh-Allow-Retry") == "true":
		return postNotProcessed
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout:
		return postAmbiguous
	}
	return postRejected
}

// readCreated decodes a 2xx answer. One that cannot be read (a connection
// cut mid-body) is ambiguous: the transfer may well exist.
func (r *createRun) readCreated(resp *http.Response) postResult {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		r.lastErr = fmt.Errorf("saferetry: reading the transfer answer: %w", err)
		return postAmbiguous
	}
	t, err := decodeTransfer(body)
	if err != nil {
		r.lastErr = err
		return postAmbiguous
	}
	r.result = t
	return postCreated
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
