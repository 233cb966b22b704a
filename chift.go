package saferetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// ErrTransactionNotFound: Chift's monitoring endpoint knows no request with
// that client request id (yet).
var ErrTransactionNotFound = errors.New("saferetry: Chift transaction not found")

// ErrRequestIDSpent: the Chift request id can no longer carry this create.
// Chift processes one request per id, "regardless of the endpoint", and
// answers every later one 409 REQUEST_ALREADY_PROCESSED without processing
// it (Chift's idempotency guide), so no post under the id can create the
// entity. The id is held by another request (*ChiftRequestIDReusedError)
// or by a request that created nothing (*ChiftRequestIDSpentError): send
// the create under a new request id.
var ErrRequestIDSpent = errors.New("saferetry: Chift request id already used: a new one is needed")

// ChiftService is Chift's monitoring lookup and creates that survive a
// lost response.
type ChiftService struct {
	client *Client
	// sleep makes Create's waits between posts and between lookups; nil
	// means sleep. Tests record the waits instead of making them.
	sleep func(context.Context, time.Duration) error
}

// Transaction is what Chift's monitoring endpoint says about a request.
type Transaction struct {
	CreatedOn  time.Time `json:"created_on"`
	Method     string    `json:"method"`
	Route      string    `json:"route"`
	StatusCode int       `json:"status_code"` // 0 while the request is still in process
	// CreatedEntityID is the id of the entity the request created; empty
	// when it created none.
	CreatedEntityID string `json:"created_entity_id"`
}

// InProcess: the request is recorded but has no status yet.
func (t *Transaction) InProcess() bool { return t.StatusCode == 0 }

// UnmarshalJSON takes null status_code and created_entity_id as zero.
func (t *Transaction) UnmarshalJSON(data []byte) error {
	type plain Transaction
	var raw struct {
		plain
		StatusCode      *int    `json:"status_code"`
		CreatedEntityID *string `json:"created_entity_id"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*t = Transaction(raw.plain)
	if raw.StatusCode != nil {
		t.StatusCode = *raw.StatusCode
	}
	t.CreatedEntityID = deref(raw.CreatedEntityID)
	return nil
}

// LookupTransaction asks GET /consumers/{consumer}/connections/{connection}/
// transactions?client_request_id= what became of a request. An unknown id
// is an *APIError that matches ErrTransactionNotFound. The record is the
// request Chift holds under the id, whatever its endpoint (ids are unique
// "regardless of the endpoint"): before taking its CreatedEntityID for a
// create of yours, compare its Method and Route with that create's, as
// Create does.
func (s *ChiftService) LookupTransaction(ctx context.Context, consumerID, connectionID, clientRequestID string) (*Transaction, error) {
	if err := s.client.requireAPI("Chift.LookupTransaction", "chift"); err != nil {
		return nil, err
	}
	t, _, err := s.lookup(ctx, consumerID, connectionID, clientRequestID)
	return t, err
}

// lookup is LookupTransaction that also returns the response (nil when
// none came), whose Retry-After Create's polls honour.
func (s *ChiftService) lookup(ctx context.Context, consumerID, connectionID, clientRequestID string) (*Transaction, *http.Response, error) {
	if err := requireIDs(map[string]string{"consumer id": consumerID, "connection id": connectionID}); err != nil {
		return nil, nil, err
	}
	if err := ValidateKey(clientRequestID); err != nil {
		return nil, nil, err
	}
	path := "consumers/" + url.PathEscape(consumerID) + "/connections/" + url.PathEscape(connectionID) +
		"/transactions?client_request_id=" + url.QueryEscape(clientRequestID)
	var t Transaction
	resp, err := s.client.DoJSON(ctx, http.MethodGet, path, nil, &t)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		apiErr.kind = ErrTransactionNotFound
	}
	if err != nil {
		return nil, resp, err
	}
	return &t, resp, nil
}

func requireIDs(ids map[string]string) error {
	for name, v := range ids {
		if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "/?#") {
			return fmt.Errorf("saferetry: %s %q must be a non-empty path segment", name, v)
		}
	}
	return nil
}

// ChiftCreate is one create call: a POST of Body to Path, under the
// consumer and connection whose monitoring log can tell its outcome.
type ChiftCreate struct {
	Path string // relative to the base URL, e.g. "consumers/{id}/invoicing/invoices"
	// Body is the JSON body: a value that encoding/json encodes (a struct,
	// a map), or JSON already encoded, as json.RawMessage or []byte, sent
	// as it is. Create refuses, before anything is sent, a nil Body, one
	// that encodes to JSON null, bytes that are not valid JSON, a string
	// (it would go as a JSON string: pass encoded JSON as json.RawMessage)
	// and an io.Reader (encoding/json would send "{}"). Chift would answer
	// each with a 422, which spends the request id.
	Body         any
	ConsumerID   string // needed to look the request up after a lost answer; the one Path names, if it names one
	ConnectionID string
	// RequestID is the X-Chift-Client-RequestId; empty: a UUIDv4. Reuse
	// one on purpose to finish a create an earlier process began.
	RequestID string
	// FirstSentAt is, when this call resumes such a create, when it was
	// first sent. An earlier post may then have been processed, so Create
	// reports a definite failure only when Chift's log confirms it; any
	// other failure is ErrOutcomeUnknown. Chift keeps request ids for 6
	// months; past that a repost could create a second entity, so Create
	// refuses it. A FirstSentAt more than a minute ahead of the clock is
	// refused as a mistake.
	FirstSentAt time.Time
}

// ChiftRequestIDRetention is how long Chift remembers a request id.
// Create refuses to resume a create first sent longer ago, less a day.
const ChiftRequestIDRetention = 180 * 24 * time.Hour

// chiftFutureTolerance is how far ahead of the clock FirstSentAt may be:
// clocks step back by a little, a create is not sent an hour from now.
const chiftFutureTolerance = time.Minute

// ChiftCreated is the result of Create.
type ChiftCreated struct {
	RequestID  string
	StatusCode int             // the create's status, or the original status when recovered
	EntityID   string          // the answer's "id", or the created_entity_id when recovered
	Body       json.RawMessage // the answer's body; nil when recovered
	// Recovered: the answer was lost (or the request id had been used
	// before, by a request with the same method and route), and the
	// outcome was read from the monitoring endpoint.
	Recovered bool
}

// ChiftRequestIDReusedError: Chift's monitoring log holds, under the
// request id, a request that is not this create: another method or another
// route (the log's "method" and "route", ApiTransactionLookupOut in
// Chift's OpenAPI). Its entity, if any, is not this create's, and this
// create was not processed: Chift processes one request per id, whatever
// the endpoint. It matches ErrRequestIDSpent: send the create under a new
// request id.
type ChiftRequestIDReusedError struct {
	RequestID string
	Logged    *Transaction // the request the log holds under RequestID
	// Method and Route are this create's: "POST" and the path it posts
	// to, with the base URL's path.
	Method, Route string
}

func (e *ChiftRequestIDReusedError) Error() string {
	outcome := " (in process)"
	switch {
	case e.Logged.CreatedEntityID != "":
		outcome = fmt.Sprintf(" (answered %d, entity %s)", e.Logged.StatusCode, e.Logged.CreatedEntityID)
	case !e.Logged.InProcess():
		outcome = fmt.Sprintf(" (answered %d)", e.Logged.StatusCode)
	}
	return fmt.Sprintf("saferetry: Chift request id %q belongs to another request: Chift's log holds %s %s%s, this create is %s %s, "+
		"and was not processed: send it under a new request id", e.RequestID, e.Logged.Method, e.Logged.Route, outcome, e.Method, e.Route)
}

func (e *ChiftRequestIDReusedError) Unwrap() error { return ErrRequestIDSpent }

// ChiftRequestIDSpentError: the request under the id was answered
// OriginalStatus (a validation error, say, or the business 409
// ERROR_INVOICE_NUMBER_ALREADY_USED) and created nothing, and Chift
// answers every later request under the id 409 REQUEST_ALREADY_PROCESSED
// ("Request already processed: <status>") without processing it. It
// matches ErrRequestIDSpent: correct the create and send it under a new
// request id. Err is the answer that told: Chift's 409 (an *APIError that
// matches ErrRequestAlreadyProcessed, OriginalStatus set) or, when the
// status was read from the monitoring log, an *APIError with that status
// (the log keeps the status, not the body). With an OriginalStatus of 500
// or more the error comes inside an *OutcomeError: Chift recorded a failure
// of its own or of the connector, which may have left the entity in the
// connected system or not.
type ChiftRequestIDSpentError struct {
	RequestID      string
	OriginalStatus int
	Err            error
}

func (e *ChiftRequestIDSpentError) Error() string {
	what := "created nothing"
	if e.OriginalStatus >= 500 {
		what = "may or may not have left the entity in the connected system"
	}
	return fmt.Sprintf("saferetry: Chift request id %q is spent: the request under it was answered %d and %s, and Chift answers "+
		"every later request under it REQUEST_ALREADY_PROCESSED: send the create under a new request id: %v", e.RequestID, e.OriginalStatus, what, e.Err)
}

func (e *ChiftRequestIDSpentError) Unwrap() []error { return []error{ErrRequestIDSpent, e.Err} }

// ChiftRateLimitedError: Chift answered 429 (the rate limits are its
// connectors', and "when a retry-after value is provided, Chift will
// respect it", its rate-limit guide), or asked with Retry-After for a wait
// that Create could not make: longer than the Transport's
// WithMaxRetryAfter (30 s by default), or past the context's deadline.
// Create never posts again sooner than Retry-After says. Nothing was
// created, unless the error comes inside an *OutcomeError (an earlier post
// of the same Create may have been processed): wait RetryAfter, then call
// Create again with the same RequestID. Err is the last answer.
type ChiftRateLimitedError struct {
	RequestID  string
	RetryAfter time.Duration // what Retry-After asked; 0 when the answer named no wait
	Err        *APIError
}

func (e *ChiftRateLimitedError) Error() string {
	wait := "a while"
	if e.RetryAfter > 0 {
		wait = e.RetryAfter.String()
	}
	return fmt.Sprintf("saferetry: Chift answered %d to the create under request id %q: wait %s, then send it again under the same id: %v",
		e.Err.StatusCode, e.RequestID, wait, e.Err)
}

func (e *ChiftRateLimitedError) Unwrap() error { return e.Err }

// chiftBudgetError: the Transport's retry budget refused a request that
// Create would have sent beyond its first post. It matches
// ErrRetryBudgetExhausted and last, the failure that called for it.
type chiftBudgetError struct {
	requestID, what string
	last            error
}

func (e *chiftBudgetError) Error() string {
	msg := fmt.Sprintf("saferetry: retry budget exhausted: no %s for Chift request id %q", e.what, e.requestID)
	if e.last != nil {
		msg += ": " + e.last.Error()
	}
	return msg
}

func (e *chiftBudgetError) Unwrap() []error {
	if e.last == nil {
		return []error{ErrRetryBudgetExhausted}
	}
	return []error{ErrRetryBudgetExhausted, e.last}
}

// chiftPollLimit bounds the monitoring polls of one Create beside its
// context: longer than Chift's own ~31 s connector back-off.
const chiftPollLimit = 2 * time.Minute

// maxChiftPosts bounds the posts of one Create when the transport's own
// retries end on a server error or a 429: the key makes each repost safe.
const maxChiftPosts = 3

// Create posts a create request exactly once and reports one of:
//
//   - the entity: its id from the answer or, when the answer was lost (a
//     connection cut, REQUEST_ALREADY_PROCESSED to a repost, a body cut
//     off, an error of unknown type), from Chift's monitoring log, marked
//     Recovered. The log's record counts only if its method and route are
//     this create's (POST and Path, with or without the base URL's path);
//     another request under the id is a *ChiftRequestIDReusedError. While
//     the log shows the request in process, Create polls it with backoff,
//     for up to two minutes within ctx.
//   - a definite failure, nothing created: the *APIError of a 4xx;
//     *ChiftRequestIDSpentError when the id was used by a request that
//     created nothing; *ChiftRateLimitedError when Chift asked for a wait
//     Create could not make; the last 5xx or transport error when the posts
//     ran out; an error matching ErrRetryBudgetExhausted when the retry
//     budget refused the next repost.
//   - an error matching ErrOutcomeUnknown (an *OutcomeError with the request
//     id), only when a post may have been processed and neither an answer
//     nor the log told the outcome within ctx and these limits.
//
// When the transport's retries end on a 408, 429 or 5xx, or on a failure
// that may have reached Chift or provably did not, Create posts again
// under the same request id (the id makes that safe), at most 3 posts in
// all, after the backoff's wait or the answer's Retry-After, whichever is
// longer. An error of a type Create does not know (a wrapper replaced the
// transport's) proves nothing: the log is asked before any repost. Each
// repost and each lookup takes a retry from the Transport's retry budget,
// as the transport's own retries do, so a Chift outage costs a Create
// about 1.2 requests once the budget's burst is spent.
//
// Pass ctx with a deadline: under the default options a Create against a
// Chift that accepts connections and never answers runs for up to about
// 50 minutes (3 posts of 4 attempts of 90 s with waits of up to 30 s, and
// after each post up to 2 minutes of log polls and one more lookup; README
// "Chift"). When ctx ends, Create returns at once.
//
// On a client made for zerohash, or for neither API, Create returns an
// error before anything is sent.
func (s *ChiftService) Create(ctx context.Context, in ChiftCreate) (*ChiftCreated, error) {
	if err := s.client.requireAPI("Chift.Create", "chift"); err != nil {
		return nil, err
	}
	c, err := s.newCreate(in, time.Now())
	if err != nil {
		return nil, err
	}
	start := CreateStart{API: "chift", Key: c.in.RequestID, Resumed: !c.in.FirstSentAt.IsZero()}
	return observeCreate(ctx, &s.client.transport.cfg, start, c.run, func(created *ChiftCreated) CreateDone {
		d := CreateDone{Posts: c.posts, Lookups: c.lookups, BudgetExhausted: c.budgetRefused}
		if created != nil {
			d.Outcome = OutcomeCreated.String()
			if created.Recovered {
				d.Outcome = OutcomeRecovered.String()
			}
		}
		return d
	})
}

// chiftCreate is one Create in progress: what it sends, and what it has
// learned that outlives one post.
type chiftCreate struct {
	s       *ChiftService
	in      ChiftCreate
	body    json.RawMessage
	url     *url.URL // where the POST goes
	posts   int
	lookups int // lookups in Chift's log sent, polls included
	// budgetRefused: the retry budget refused a repost or a lookup.
	budgetRefused bool
	// mayExist: a post may have been processed, and no answer since has
	// told what became of it. It makes giving up ErrOutcomeUnknown rather
	// than a definite failure.
	mayExist bool
	// retryAfter is the Retry-After of the latest answer, 0 if none;
	// waitRefused: Create could not wait that long.
	retryAfter  time.Duration
	waitRefused bool
	backoff     *backoff.ExponentialBackOff // the waits between posts
}

func (s *ChiftService) newCreate(in ChiftCreate, now time.Time) (*chiftCreate, error) {
	body, err := in.prepare(now)
	if err != nil {
		return nil, err
	}
	u, err := s.client.resolve(in.Path)
	if err != nil {
		return nil, err
	}
	// A resumed create's earlier post may have been processed: no answer
	// to this run's posts can tell that it was not, but Chift's log.
	return &chiftCreate{s: s, in: in, body: body, url: u, mayExist: !in.FirstSentAt.IsZero()}, nil
}

// chiftNext is what the answer to a post calls for.
type chiftNext int

const (
	chiftDone    chiftNext = iota // the outcome is known
	chiftRepost                   // post again under the id, if the limits allow
	chiftReadLog                  // processed: the log has the outcome
	chiftAskLog                   // perhaps processed: ask the log before posting again
	chiftGiveUp                   // no repost can help
)

// run posts, reads the log when an answer calls for it, and posts again
// while that may help and the limits allow.
func (c *chiftCreate) run(ctx context.Context) (*ChiftCreated, error) {
	for {
		created, next, err := c.post(ctx)
		switch next {
		case chiftDone:
			return created, err
		case chiftGiveUp:
			return c.giveUp(ctx, err)
		case chiftReadLog:
			created, _, err := c.readLog(ctx, true, err)
			return created, err
		case chiftAskLog:
			created, again, logErr := c.readLog(ctx, false, err)
			if !again {
				return created, logErr
			}
		}
		if err := c.beforeRepost(ctx, err); err != nil {
			return c.giveUp(ctx, err)
		}
	}
}

// post sends the create once (the transport retries within) and reads the
// answer.
func (c *chiftCreate) post(ctx context.Context) (*ChiftCreated, chiftNext, error) {
	c.posts++
	req, err := c.s.client.NewRequest(withStep(ctx, StepPost), http.MethodPost, c.in.Path, c.body)
	if err != nil {
		return nil, chiftGiveUp, err
	}
	req.Header.Set(ChiftRequestIDHeader, c.in.RequestID)
	var body json.RawMessage
	resp, err := c.s.client.Do(req, &body)
	c.retryAfter, c.waitRefused = retryAfterOf(resp), false
	if err == nil {
		return &ChiftCreated{RequestID: c.in.RequestID, StatusCode: resp.StatusCode, EntityID: entityID(body), Body: body}, chiftDone, nil
	}
	next, err := c.classify(resp, err)
	return nil, next, err
}

// classify reads a failed post: what it proves about the post, and what
// to do next.
func (c *chiftCreate) classify(resp *http.Response, err error) (chiftNext, error) {
	var apiErr *APIError
	var reqErr *RequestError
	switch {
	case resp != nil && resp.StatusCode < 300:
		c.mayExist = true // created; the answer was cut off on the way
		return chiftReadLog, err
	case errors.Is(err, ErrRequestAlreadyProcessed) && errors.As(err, &apiErr):
		return c.alreadyProcessed(apiErr)
	case errors.Is(err, ErrRequestInProcess):
		c.mayExist = true
		return chiftAskLog, err
	case errors.Is(err, ErrOutcomeUnknown):
		c.mayExist = true
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests {
			// The wait a 429 asked for went with its response: no repost,
			// the log is asked instead (Chift's rate limits are its
			// connectors', not the monitoring endpoint's).
			return chiftGiveUp, err
		}
		return chiftRepost, err
	case errors.As(err, &reqErr):
		return chiftRepost, err // provably not sent
	case errors.As(err, &apiErr):
		return c.answered(apiErr), err
	}
	c.mayExist = true // a wrapper replaced the transport's error: it proves nothing
	return chiftAskLog, err
}

// alreadyProcessed reads Chift's 409 REQUEST_ALREADY_PROCESSED: a request
// under the id was processed before, with the status its message gives
// ("Request already processed: 200"). A success, or no status, leaves the
// entity to the log; a failure spent the id.
func (c *chiftCreate) alreadyProcessed(apiErr *APIError) (chiftNext, error) {
	if s := apiErr.OriginalStatus; s >= 300 {
		return chiftDone, c.spent(s, apiErr)
	}
	c.mayExist = true
	return chiftReadLog, apiErr
}

// answered reads an error status the transport handed back. 408, 429 and
// 5xx say this post was not processed (the transport turns a gateway's 502
// or 504, and such a status after an unanswered attempt, into
// ErrOutcomeUnknown), so posting again may help. Any other status is
// Chift's answer under the id, which it checks first: no earlier post of
// this Create was processed either.
func (c *chiftCreate) answered(apiErr *APIError) chiftNext {
	s := apiErr.StatusCode
	if s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500 {
		return chiftRepost
	}
	// A 4xx to a repost does not clear an earlier post that may have been
	// processed: a proxy in front of Chift answers 400, 404 or 413 without
	// looking at the id.
	return chiftGiveUp
}

// spent is the error for a request id whose request was answered status.
func (c *chiftCreate) spent(status int, answer error) error {
	err := &ChiftRequestIDSpentError{RequestID: c.in.RequestID, OriginalStatus: status, Err: answer}
	if status < 500 {
		return err
	}
	return c.unknown(fmt.Sprintf("Chift recorded a failure (%d) for the request under this id", status), err)
}

// beforeRepost decides whether another post may go, and waits for it. It
// returns the error to give up with when none may: the posts are spent, the
// context has ended, the wait (the backoff's, or the answer's Retry-After
// when longer) is longer than the Transport's WithMaxRetryAfter or than the
// context has left, or the retry budget refuses the repost.
func (c *chiftCreate) beforeRepost(ctx context.Context, last error) error {
	if c.posts >= maxChiftPosts || ctx.Err() != nil {
		return last
	}
	wait := max(c.nextWait(), c.retryAfter)
	if c.retryAfter > c.s.client.transport.cfg.maxRetryAfter || !fitsBefore(ctx, wait) {
		c.waitRefused = c.retryAfter > 0
		return last
	}
	if !c.draw() {
		return &chiftBudgetError{requestID: c.in.RequestID, what: "repost", last: c.typed(last)}
	}
	if c.pause(ctx, wait) != nil {
		return last
	}
	return nil
}

// giveUp ends the Create on last, the latest failure: a definite failure,
// in the type that says what to do, unless a post may have been processed.
// Then the log is asked, and what it cannot tell is ErrOutcomeUnknown.
func (c *chiftCreate) giveUp(ctx context.Context, last error) (*ChiftCreated, error) {
	last = c.typed(last)
	if !c.mayExist {
		return nil, last
	}
	created, again, err := c.readLog(ctx, false, last)
	if again {
		return nil, c.unknown("a post may have reached Chift, whose log does not know the request (yet)", last)
	}
	return created, err
}

// typed gives a definite answer the type that says what to do: a 429, or
// an answer whose Retry-After Create could not wait out, becomes a
// *ChiftRateLimitedError.
func (c *chiftCreate) typed(last error) error {
	apiErr, ok := last.(*APIError)
	if ok && (apiErr.StatusCode == http.StatusTooManyRequests || c.waitRefused) {
		return &ChiftRateLimitedError{RequestID: c.in.RequestID, RetryAfter: c.retryAfter, Err: apiErr}
	}
	return last
}

// readLog asks Chift's monitoring log what became of the request under the
// id. It polls with backoff (up to chiftPollLimit, within ctx) while the
// log shows the request in process, and, when an answer said it was
// processed, while the log does not know it yet: the log may lag. When the
// log does not know a request not known to be processed, none under the id
// was recorded, and posting again is worth it (again). Each lookup takes a
// retry from the budget; a lookup's Retry-After is honoured as a post's.
// cause is the failure that sent Create to the log.
func (c *chiftCreate) readLog(ctx context.Context, processed bool, cause error) (created *ChiftCreated, again bool, err error) {
	polls := c.s.client.transport.cfg.backOff(chiftPollLimit)
	last := cause
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return nil, false, c.unknown("the context ended before Chift's log told the outcome", last)
		}
		if !c.draw() {
			return nil, false, c.unknown("the retry budget refused a lookup in Chift's log",
				&chiftBudgetError{requestID: c.in.RequestID, what: "lookup in Chift's monitoring log", last: last})
		}
		t, resp, err := c.s.lookup(withStep(ctx, lookupStep(n)), c.in.ConsumerID, c.in.ConnectionID, c.in.RequestID)
		c.lookups++
		switch {
		case err == nil:
			if created, done, err := c.fromLog(t); done {
				return created, false, err
			}
			last = ErrRequestInProcess
		case errors.Is(err, ErrTransactionNotFound) && !processed:
			return nil, true, err
		case isDefiniteRejection(err):
			return nil, false, c.unknown("Chift's monitoring log refused the lookup", err)
		default:
			last = err
		}
		if err := c.pollWait(ctx, polls, resp, last); err != nil {
			return nil, false, err
		}
	}
}

// pollWait waits before the next lookup: the backoff's wait, or the
// lookup's Retry-After when longer. It returns the error to stop with when
// the polls have run for chiftPollLimit, or the wait does not fit.
func (c *chiftCreate) pollWait(ctx context.Context, polls backoff.BackOff, resp *http.Response, last error) error {
	wait, retryAfter := polls.NextBackOff(), retryAfterOf(resp)
	switch {
	case wait == backoff.Stop:
		return c.unknown("Chift's log did not tell the outcome within "+chiftPollLimit.String(), last)
	case retryAfter > c.s.client.transport.cfg.maxRetryAfter:
		var apiErr *APIError
		if errors.As(last, &apiErr) {
			last = &ChiftRateLimitedError{RequestID: c.in.RequestID, RetryAfter: retryAfter, Err: apiErr}
		}
		return c.unknown("Chift's log asked for a longer wait than WithMaxRetryAfter allows", last)
	}
	wait = max(wait, retryAfter)
	if !fitsBefore(ctx, wait) {
		return c.unknown("the context's deadline comes before Chift's log could be asked again", last)
	}
	if c.pause(ctx, wait) != nil {
		return c.unknown("the context ended before Chift's log told the outcome", last)
	}
	return nil
}

// fromLog reads the log's record: whether it tells the outcome (done), and
// what that is. The record is this create's only if its method and route
// are; a finished one gives the entity (Recovered) or spends the id.
func (c *chiftCreate) fromLog(t *Transaction) (created *ChiftCreated, done bool, err error) {
	if err := c.notOurs(t); err != nil {
		return nil, true, err
	}
	if err := c.beforeFirstSend(t); err != nil {
		return nil, true, err
	}
	switch {
	case t.InProcess():
		return nil, false, nil
	case t.StatusCode >= 300:
		return nil, true, c.spent(t.StatusCode, &APIError{
			StatusCode: t.StatusCode, OriginalStatus: t.StatusCode, RequestID: c.in.RequestID,
			Message: fmt.Sprintf("the request with this id was answered %d; Chift's log keeps the status, not the body", t.StatusCode),
		})
	}
	return &ChiftCreated{RequestID: c.in.RequestID, StatusCode: t.StatusCode, EntityID: t.CreatedEntityID, Recovered: true}, true, nil
}

// ChiftLogSkewMargin is how much earlier than FirstSentAt Chift's log may
// date a request and it still be taken as this create's: the two clocks
// are not tied to each other (Chift, unlike zerohash, signs nothing with a
// timestamp), so the margin is wide.
const ChiftLogSkewMargin = 10 * time.Minute

// beforeFirstSend: the logged request is older than this create's first
// send (FirstSentAt, less ChiftLogSkewMargin), so it cannot be this
// create's own. It is not called someone else's either (a FirstSentAt
// recorded wrong would then advise a new id, and a duplicate): the outcome
// is unknown.
func (c *chiftCreate) beforeFirstSend(t *Transaction) error {
	first := c.in.FirstSentAt
	if first.IsZero() || t.CreatedOn.IsZero() || !t.CreatedOn.Before(first.Add(-ChiftLogSkewMargin)) {
		return nil
	}
	return c.unknown(fmt.Sprintf("Chift's log dates the request under this id %s, %s before FirstSentAt: it cannot be shown to be this create's",
		t.CreatedOn.UTC().Format(time.RFC3339), first.Sub(t.CreatedOn).Round(time.Second)), nil)
}

// notOurs compares the logged request with this create: the same method
// (POST) and route (see sameRoute). Chift's log gives both for every
// request (method and route are required in ApiTransactionLookupOut); a
// record without them cannot be shown to be this create's.
func (c *chiftCreate) notOurs(t *Transaction) error {
	if t.Method == "" || t.Route == "" {
		return c.unknown("Chift's log names no method or route for the request under this id: it cannot be told to be this create's", nil)
	}
	if strings.EqualFold(t.Method, http.MethodPost) && c.sameRoute(t.Route) {
		return nil
	}
	return &ChiftRequestIDReusedError{RequestID: c.in.RequestID, Logged: t, Method: http.MethodPost, Route: c.url.Path}
}

// sameRoute: route, as Chift's log gives it ("Path of the original
// request"), is the path this create posts to, with or without the base
// URL's path (a proxy in front of Chift may add one), escaped or not, a
// trailing slash aside.
func (c *chiftCreate) sameRoute(route string) bool {
	if unescaped, err := url.PathUnescape(route); err == nil {
		route = unescaped
	}
	route = strings.TrimSuffix(route, "/")
	full := strings.TrimSuffix(c.url.Path, "/")
	return route == full || route == strings.TrimPrefix(full, c.s.client.baseURL.Path)
}

// unknown is ErrOutcomeUnknown for this create, for reason, with err (the
// latest failure, if any) inside.
func (c *chiftCreate) unknown(reason string, err error) error {
	return &OutcomeError{Key: c.in.RequestID, Reason: reason, Err: err}
}

// draw takes one retry from the Transport's retry budget for a request
// Create sends beyond its first post (a repost, a lookup), and takes back
// the deposit that request's RoundTrip makes: it is a retry of the create,
// not a new request, and must not earn budget as one does. False: the
// budget is spent. Without a budget (WithoutRetryBudget) it is always true.
func (c *chiftCreate) draw() bool {
	if !c.s.client.transport.drawCreateRetry() {
		c.budgetRefused = true
		return false
	}
	return true
}

// nextWait is the backoff's next wait between posts.
func (c *chiftCreate) nextWait() time.Duration {
	if c.backoff == nil {
		c.backoff = c.s.client.transport.cfg.backOff(0)
	}
	return c.backoff.NextBackOff()
}

func (c *chiftCreate) pause(ctx context.Context, d time.Duration) error {
	if c.s.sleep != nil {
		return c.s.sleep(ctx, d)
	}
	return sleep(ctx, d)
}

// retryAfterOf reads the Retry-After of resp, 0 when there is none.
func retryAfterOf(resp *http.Response) time.Duration {
	d, _ := askedWait(resp, false)
	return d
}

// Prepare checks the create as Create does before anything is sent and
// returns it ready to be stored and sent later: Body as the
// json.RawMessage Create would post, RequestID a new UUIDv4 when it was
// empty. Create sends a prepared create's bytes unchanged under its
// RequestID, so a durable layer that stores the result (the saferiver
// module's jobs do) sends the same request on every attempt. The errors
// are Create's own for bad input, returned before anything is sent:
// an empty Path or id, a Path under another consumer, a Body that is not
// a JSON object, an invalid RequestID (ErrInvalidKey), a FirstSentAt in
// the future; a FirstSentAt older than Chift's retention is an
// *OutcomeError matching ErrKeyExpired.
func (in ChiftCreate) Prepare() (ChiftCreate, error) {
	body, err := in.prepare(time.Now())
	if err != nil {
		return ChiftCreate{}, err
	}
	in.Body = body
	return in, nil
}

// prepare checks the call before anything is sent, draws a request id when
// none was given, and returns the body's bytes, the same on every post.
func (in *ChiftCreate) prepare(now time.Time) (json.RawMessage, error) {
	if strings.TrimSpace(in.Path) == "" {
		return nil, errors.New("saferetry: ChiftCreate: Path is empty")
	}
	if err := requireIDs(map[string]string{"ChiftCreate ConsumerID": in.ConsumerID, "ChiftCreate ConnectionID": in.ConnectionID}); err != nil {
		return nil, err
	}
	if consumer, ok := pathConsumer(in.Path); ok && consumer != in.ConsumerID {
		return nil, fmt.Errorf("saferetry: ChiftCreate: Path is under consumer %q, ConsumerID is %q: the log read after a lost answer would be the wrong consumer's", consumer, in.ConsumerID)
	}
	body, err := encodeChiftBody(in.Body)
	if err != nil {
		return nil, err
	}
	switch {
	case in.FirstSentAt.IsZero():
	case in.FirstSentAt.After(now.Add(chiftFutureTolerance)):
		return nil, fmt.Errorf("saferetry: ChiftCreate: FirstSentAt %s is %s ahead of the clock; it says when the create was first sent",
			in.FirstSentAt.Format(time.RFC3339), in.FirstSentAt.Sub(now).Round(time.Second))
	case now.Sub(in.FirstSentAt) > ChiftRequestIDRetention-24*time.Hour:
		return nil, &OutcomeError{Key: in.RequestID, Reason: fmt.Sprintf("first sent %s ago: Chift may have forgotten the request id (it keeps them 6 months), so posting again could create a second entity", now.Sub(in.FirstSentAt).Round(time.Hour)), Err: ErrKeyExpired}
	}
	if in.RequestID == "" {
		id, err := newUUIDKey()
		if err != nil {
			return nil, fmt.Errorf("saferetry: generating request id: %w", err)
		}
		in.RequestID = id
	}
	return body, ValidateKey(in.RequestID)
}

// pathConsumer reads the consumer id of a Chift path,
// "consumers/{consumer_id}/...", as every create endpoint is (Chift's
// OpenAPI); ok is false for a path of another shape.
func pathConsumer(path string) (consumer string, ok bool) {
	path, _, _ = strings.Cut(strings.TrimPrefix(path, "/"), "?")
	parts := strings.Split(path, "/")
	if len(parts) < 3 || parts[0] != "consumers" {
		return "", false
	}
	consumer, err := url.PathUnescape(parts[1])
	return consumer, err == nil
}

// encodeChiftBody gives the bytes of ChiftCreate.Body: JSON already
// encoded (json.RawMessage, []byte) as it is, any other value as
// encoding/json encodes it. It refuses what Chift would answer with a 422.
func encodeChiftBody(body any) (json.RawMessage, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
		return nil, errors.New("saferetry: ChiftCreate: Body is nil; Chift's creates take a JSON object")
	case string:
		return nil, errors.New("saferetry: ChiftCreate: Body is a string, which would be sent as a JSON string; pass encoded JSON as json.RawMessage")
	case io.Reader:
		return nil, fmt.Errorf("saferetry: ChiftCreate: Body is an io.Reader (%T), which encoding/json does not read; pass its bytes as json.RawMessage", body)
	case json.RawMessage:
		raw = b
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("saferetry: ChiftCreate: encoding Body: %w", err)
		}
	}
	trimmed := bytes.TrimSpace(raw)
	switch {
	case !json.Valid(raw):
		return nil, errors.New("saferetry: ChiftCreate: Body is not valid JSON")
	case bytes.Equal(trimmed, []byte("null")):
		return nil, fmt.Errorf("saferetry: ChiftCreate: Body (%T) is JSON null; Chift's creates take a JSON object", body)
	case trimmed[0] != '{':
		return nil, fmt.Errorf("saferetry: ChiftCreate: Body (%T) encodes to a JSON %s, not an object; Chift's creates take a JSON object", body, jsonKind(trimmed[0]))
	}
	return raw, nil
}

// jsonKind names the JSON value that starts with b.
func jsonKind(b byte) string {
	switch b {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	}
	return "number"
}

// entityID reads the "id" of a created entity, string or number.
func entityID(body json.RawMessage) string {
	var out struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(body, &out) != nil || len(out.ID) == 0 {
		return ""
	}
	if s := jsonString(out.ID); s != "" {
		return s
	}
	return strings.TrimSpace(string(out.ID))
}
