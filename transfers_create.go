package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// postResult classifies the answer to one POST /transfers.
type postResult int

const (
	postCreated      postResult = iota
	postRejected                // a definite answer: the transfer was not created
	postDuplicate               // zerohash says the client_transfer_id exists
	postNotProcessed            // provably not processed: post again
	postAmbiguous               // may or may not exist: look it up first
)

// Bounds of one Create beside its context: how many POSTs it makes (the
// first and the reposts after a lookup found nothing or a failure proved
// nothing was processed), and how many times one lookup is repeated.
const (
	maxTransferPosts = 4
	lookupRetries    = 8
)

// Create creates a transfer exactly once, following zerohash's recipe. It
// posts once; after an ambiguous failure (timeout, connection lost after
// sending, 500, 502, 504) it does not repost but looks the
// client_transfer_id up, and reposts with the same id only if nothing is
// there. A "not an unique client_transfer_id" answer means it exists: it is
// looked up (again while not yet visible) and returned. The result's
// Outcome says which path was taken. A definite rejection is an *APIError.
// When the truth cannot be learned within the context and the retry
// limits, the error matches ErrOutcomeUnknown and carries the
// client_transfer_id.
func (s *TransfersService) Create(ctx context.Context, req TransferRequest) (*Transfer, error) {
	clock, _ := s.signingClock()
	if err := req.validate(clock); err != nil {
		return nil, err
	}
	if req.ClientTransferID == "" {
		id, err := newUUIDKey()
		if err != nil {
			return nil, fmt.Errorf("saferetry: generating client_transfer_id: %w", err)
		}
		req.ClientTransferID = id
	}
	body, err := json.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("saferetry: encoding transfer: %w", err)
	}
	r := &createRun{s: s, req: &req, body: body, firstSent: req.FirstSentAt, cfg: &s.client.transport.cfg}
	return r.run(ctx)
}

// createRun is one Create: the request, its encoded body, and when the
// id was first sent (for the uniqueness window).
type createRun struct {
	s         *TransfersService
	cfg       *config
	req       *TransferRequest
	body      []byte
	firstSent time.Time
	result    *Transfer // set by readCreated
}

func (r *createRun) run(ctx context.Context) (*Transfer, error) {
	outcome := OutcomeCreated
	// A resumed create had an earlier attempt of unknown outcome.
	next := postAmbiguous
	var lastErr error
	if r.firstSent.IsZero() {
		next = r.postAndClassify(ctx, &lastErr)
	}
	wait := r.cfg.backOff(0)
	for posts := 1; ; posts++ {
		switch next {
		case postCreated:
			return r.accept(r.result, outcome)
		case postRejected:
			return nil, lastErr
		case postDuplicate:
			return r.recover(ctx)
		case postAmbiguous:
			t, err := r.lookup(ctx, false)
			if err == nil {
				return r.accept(t, OutcomeRecovered)
			}
			if !errors.Is(err, ErrTransferNotFound) {
				return nil, err
			}
			outcome = OutcomeReposted
		case postNotProcessed:
			if err := sleep(ctx, wait.NextBackOff()); err != nil {
				return nil, r.unknown("context ended before the transfer could be posted again", err)
			}
		}
		if posts >= maxTransferPosts {
			return nil, r.unknown(fmt.Sprintf("gave up after %d posts", posts), lastErr)
		}
		if err := r.mayRepost(); err != nil {
			return nil, err
		}
		next = r.postAndClassify(ctx, &lastErr)
	}
}

// accept returns t unless it is another transfer under the same id.
func (r *createRun) accept(t *Transfer, outcome CreateOutcome) (*Transfer, error) {
	if !r.req.matches(t) {
		return nil, fmt.Errorf("%w: transfer %d holds client_transfer_id %s with other accounts, asset or amount",
			ErrDuplicateClientTransferID, t.ID, r.req.ClientTransferID)
	}
	t.Outcome = outcome
	return t, nil
}

// recover looks up a transfer zerohash says exists; until it is visible
// the lookup is repeated.
func (r *createRun) recover(ctx context.Context) (*Transfer, error) {
	t, err := r.lookup(ctx, true)
	if err != nil {
		if errors.Is(err, ErrTransferNotFound) {
			return nil, r.unknown("zerohash reports the id as used, but the lookup does not find it", err)
		}
		return nil, err
	}
	return r.accept(t, OutcomeRecovered)
}

// mayRepost refuses a repost once the uniqueness window may have passed:
// zerohash would then take the id as new and could create a second
// transfer.
func (r *createRun) mayRepost() error {
	if r.firstSent.IsZero() || time.Since(r.firstSent) < TransferUniquenessWindow-transferRepostMargin {
		return nil
	}
	return r.unknown(fmt.Sprintf("first sent %s ago, too close to zerohash's 72h uniqueness window to post again safely", time.Since(r.firstSent).Round(time.Minute)), nil)
}

func (r *createRun) unknown(reason string, err error) error {
	return &OutcomeError{Key: r.req.ClientTransferID, Reason: reason, Err: err}
}

// lookup asks GET /transfers?client_transfer_id=, repeating failed
// lookups with backoff (and a not-found one too, when untilFound).
func (r *createRun) lookup(ctx context.Context, untilFound bool) (*Transfer, error) {
	policy := backoff.WithContext(backoff.WithMaxRetries(r.cfg.backOff(0), lookupRetries), ctx)
	var lastErr error
	t, err := backoff.RetryWithData(func() (*Transfer, error) {
		t, err := r.s.FindByClientTransferID(ctx, r.req.ClientTransferID)
		lastErr = err
		switch {
		case err == nil:
			return t, nil
		case errors.Is(err, ErrTransferNotFound) && !untilFound:
			return nil, backoff.Permanent(err)
		case isDefiniteRejection(err):
			return nil, backoff.Permanent(err)
		}
		return nil, err
	}, policy)
	if err == nil || (errors.Is(err, ErrTransferNotFound) && !untilFound) {
		return t, err
	}
	if errors.Is(lastErr, ErrTransferNotFound) {
		return nil, lastErr
	}
	return nil, r.unknown("the lookup kept failing", lastErr)
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
func (r *createRun) postAndClassify(ctx context.Context, lastErr *error) postResult {
	if r.firstSent.IsZero() {
		r.firstSent = time.Now()
	}
	req, err := r.s.client.NewRequest(ctx, http.MethodPost, "transfers", json.RawMessage(r.body))
	if err != nil {
		*lastErr = err
		return postRejected
	}
	resp, err := r.s.client.httpClient.Do(req)
	if err != nil {
		err = redactError(err)
		*lastErr = err
		if errors.Is(err, ErrOutcomeUnknown) {
			return postAmbiguous
		}
		if !provenUnsent(err) {
			return postAmbiguous // an error of unknown type proves nothing
		}
		if ctx.Err() != nil {
			*lastErr = r.unknown("context ended", err)
			return postRejected
		}
		return postNotProcessed
	}
	defer drainAndClose(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return r.readCreated(resp, lastErr)
	}
	apiErr := CheckResponse(resp).(*APIError)
	*lastErr = apiErr
	return classifyTransferAnswer(resp, apiErr)
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
func (r *createRun) readCreated(resp *http.Response, lastErr *error) postResult {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		*lastErr = fmt.Errorf("saferetry: reading the transfer answer: %w", err)
		return postAmbiguous
	}
	t, err := decodeTransfer(body)
	if err != nil {
		*lastErr = err
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
