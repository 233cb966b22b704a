package saferetry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
)

// Hooks follow every logical request through the Transport, each of its
// attempts, and each Chift.Create and Transfers.Create, for tracing and
// metrics. The saferetryotel module implements them with OpenTelemetry;
// WithHooks installs them. Every field is optional.
//
// The Start hooks return the context the work that follows runs under:
// a Create's context is the parent of its requests', a request's the
// parent of its attempts'; the matching Done hook gets the context its
// Start returned. They run on the goroutine that runs the request and
// must not block. A Start hook must return ctx or a context derived from
// it: the Transport keeps reading ctx's deadline and cancellation (nil is
// taken as ctx).
type Hooks struct {
	// RequestStart runs when a logical request begins, before its first
	// attempt and before anything is sent.
	RequestStart func(ctx context.Context, r RequestStart) context.Context
	// AttemptStart runs before each attempt goes to the base transport.
	// Changes it makes to the key header are undone: the key is the
	// Transport's.
	AttemptStart func(ctx context.Context, a AttemptStart) context.Context
	// AttemptDone runs once an attempt ends: its answer's headers came, or
	// it failed (before reaching the base transport too: a Chift token
	// that could not be had). The Attempt is the one WithObserver gets.
	// When the base transport panics, the Done hooks of the attempt and
	// the request run, with ErrBasePanicked, before the panic goes on.
	AttemptDone func(ctx context.Context, a Attempt)
	// RequestDone runs when the logical request ends: its response is
	// handed to the caller (the body is still unread), or its error.
	RequestDone func(ctx context.Context, r RequestDone)
	// CreateStart runs when Chift.Create or Transfers.Create begins, after
	// the create passed validation (a refused create runs no hook).
	CreateStart func(ctx context.Context, c CreateStart) context.Context
	// CreateDone runs when the Create returns.
	CreateDone func(ctx context.Context, c CreateDone)
}

// RequestStart describes a logical request as it begins.
type RequestStart struct {
	// API is the preset the Transport was made with: "chift", "zerohash",
	// or "" for neither (as Client.Protocol says).
	API    string
	Method string
	URL    string // without user info, query values REDACTED
	Key    string // the idempotency key the request carries, "" if none
	// RequestID is the request id the Transport stamped when its header is
	// not deduplicated on (zerohash's X-REQUEST-ID); "" otherwise.
	RequestID string
	// Step is the request's part in a Create: StepPost, StepLookup or
	// StepPoll; "" for a request a Create did not send.
	Step string
}

// The steps of a Create, in RequestStart.Step.
const (
	StepPost   = "post"   // the create's POST
	StepLookup = "lookup" // the first question after an unknown outcome: Chift's monitoring log, zerohash's GET /transfers?client_transfer_id=
	StepPoll   = "poll"   // a later lookup, while the answer is still "in process" or not yet visible
)

// AttemptStart describes one attempt as it begins.
type AttemptStart struct {
	Method string
	URL    string // without user info, query values REDACTED
	Number int    // 1 for the first attempt
	// Header is this attempt's own copy of the request header: a hook may
	// add to it (a W3C traceparent, say). It must not change the key header
	// nor anything a signature covers.
	Header http.Header
}

// RequestDone describes how a logical request ended.
type RequestDone struct {
	// StatusCode is the status of the last answer, also when the
	// Transport turned it into an error (a 409 REQUEST_ALREADY_PROCESSED,
	// a 502 of unknown outcome); 0 when no answer came.
	StatusCode int
	Attempts   int   // attempts made, 0 when none was
	Err        error // the error handed to the caller, nil with a response
	// OutcomeUnknown: Err matches ErrOutcomeUnknown (the request may have
	// been processed and nothing told whether it was).
	OutcomeUnknown bool
	// BudgetExhausted: a retry was due and the retry budget refused it.
	BudgetExhausted bool
}

// CreateStart describes a Create as it begins.
type CreateStart struct {
	API string // "chift" or "zerohash"
	// Key is the create's idempotency key: Chift's request id
	// (X-Chift-Client-RequestId) or zerohash's client_transfer_id.
	Key string
	// Resumed: FirstSentAt was set, an earlier run may have sent it.
	Resumed bool
}

// CreateDone describes how a Create ended.
type CreateDone struct {
	API string
	Key string
	// Outcome is OutcomeCreated, OutcomeRecovered or OutcomeReposted (as
	// CreateOutcome.String spells them) when the create succeeded;
	// "unknown" when Err matches ErrOutcomeUnknown; "failed" otherwise
	// (a definite refusal, or nothing was sent).
	Outcome string
	// Posts counts the POSTs made, Lookups the lookups and polls: each is
	// one logical request, whose attempts may all have ended before
	// reaching the server (a Chift token that could not be had).
	Posts   int
	Lookups int
	// BudgetExhausted: the retry budget refused a repost or a lookup the
	// create needed (Err then matches ErrRetryBudgetExhausted). A refusal
	// of the Transport's own retries within one request is that
	// request's (Attempt.BudgetExhausted), not this.
	BudgetExhausted bool
	Err             error
}

// WithHooks installs h; given more than once, every Hooks value runs, in
// the order given. Hooks with no field set are refused.
func WithHooks(h Hooks) Option {
	return func(c *config) error {
		if h.RequestStart == nil && h.AttemptStart == nil && h.AttemptDone == nil && h.RequestDone == nil &&
			h.CreateStart == nil && h.CreateDone == nil {
			return errors.New("saferetry: WithHooks: no hook set")
		}
		c.hooks = joinHooks(c.hooks, h)
		return nil
	}
}

// joinHooks runs a's hooks, then b's.
func joinHooks(a, b Hooks) Hooks {
	return Hooks{
		RequestStart: joinStart(a.RequestStart, b.RequestStart),
		AttemptStart: joinStart(a.AttemptStart, b.AttemptStart),
		AttemptDone:  joinDone(a.AttemptDone, b.AttemptDone),
		RequestDone:  joinDone(a.RequestDone, b.RequestDone),
		CreateStart:  joinStart(a.CreateStart, b.CreateStart),
		CreateDone:   joinDone(a.CreateDone, b.CreateDone),
	}
}

func joinStart[T any](a, b func(context.Context, T) context.Context) func(context.Context, T) context.Context {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return func(ctx context.Context, v T) context.Context {
		ctx = hookContext(a(ctx, v), ctx)
		return hookContext(b(ctx, v), ctx)
	}
}

func joinDone[T any](a, b func(context.Context, T)) func(context.Context, T) {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return func(ctx context.Context, v T) { a(ctx, v); b(ctx, v) }
}

// hookContext is the context a Start hook returned, or ctx when it
// returned nil.
func hookContext(got, ctx context.Context) context.Context {
	if got == nil {
		return ctx
	}
	return got
}

// stepKey carries a Create's step to the Transport in a request's context.
type stepKey struct{}

func withStep(ctx context.Context, step string) context.Context {
	return context.WithValue(ctx, stepKey{}, step)
}

func stepOf(ctx context.Context) string {
	s, _ := ctx.Value(stepKey{}).(string)
	return s
}

// lookupStep is StepLookup for the first lookup after an unknown outcome
// (n = 0), StepPoll for the ones that repeat it.
func lookupStep(n int) string {
	if n == 0 {
		return StepLookup
	}
	return StepPoll
}

// The retry reasons of Attempt.Reason other than "status_NNN".
const (
	ReasonAttemptTimeout   = "attempt_timeout"    // WithAttemptTimeout ended the attempt
	ReasonTransportError   = "transport_error"    // the connection failed, before or after sending
	ReasonRequestInProcess = "request_in_process" // Chift's 409 REQUEST_IN_PROCESS
	ReasonConflict         = "conflict"           // a bare 409 after an attempt of unknown outcome (IETF draft's "in progress")
	ReasonUnauthorized     = "unauthorized"       // 401 under Chift auth: the token is replaced
	ReasonRateLimited      = "rate_limited"       // 429
)

// retryReason names why the policy wanted another attempt after this one.
func retryReason(resp *http.Response, err error, code string) string {
	switch {
	case errors.Is(err, ErrAttemptTimeout):
		return ReasonAttemptTimeout
	case err != nil:
		return ReasonTransportError
	case resp.StatusCode == http.StatusConflict && code == codeInProcess:
		return ReasonRequestInProcess
	case resp.StatusCode == http.StatusConflict:
		return ReasonConflict
	case resp.StatusCode == http.StatusUnauthorized:
		return ReasonUnauthorized
	case resp.StatusCode == http.StatusTooManyRequests:
		return ReasonRateLimited
	}
	return "status_" + strconv.Itoa(resp.StatusCode)
}

// observeCreate runs a Create's hooks around run, and logs its end; done
// gives the counts and, for a result, its outcome.
func observeCreate[T any](ctx context.Context, cfg *config, start CreateStart, run func(context.Context) (T, error), done func(T) CreateDone) (T, error) {
	h := &cfg.hooks
	if h.CreateStart == nil && h.CreateDone == nil && cfg.logger == nil {
		return run(ctx)
	}
	if h.CreateStart != nil {
		ctx = hookContext(h.CreateStart(ctx, start), ctx)
	}
	v, err := run(ctx)
	d := done(v)
	d.API, d.Key, d.Err = start.API, start.Key, err
	if err != nil {
		d.Outcome = "failed"
		if errors.Is(err, ErrOutcomeUnknown) {
			d.Outcome = "unknown"
		}
	}
	if h.CreateDone != nil {
		h.CreateDone(ctx, d)
	}
	if cfg.logger != nil {
		logCreate(ctx, cfg.logger, d)
	}
	return v, err
}
