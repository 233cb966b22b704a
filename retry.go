package saferetry

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// ErrAttemptTimeout: one attempt took longer than WithAttemptTimeout to get
// its response headers.
var ErrAttemptTimeout = errors.New("saferetry: attempt timed out")

// Attempt describes one attempt of a logical request, for WithObserver and
// the log.
type Attempt struct {
	Method string
	URL    string // without user info, query values REDACTED
	Key    string // the idempotency key the request carries, "" if none
	// RequestID is the request id the Transport stamped when its header is
	// not deduplicated on (zerohash's X-REQUEST-ID, WithRequestIDHeader
	// without WithServerDeduplication); "" otherwise. Key and RequestID
	// are never both set.
	RequestID  string
	Number     int    // 1 for the first attempt
	StatusCode int    // 0 when the attempt ended without a response
	Code       string // the error_code of a 409 the transport read, e.g. REQUEST_IN_PROCESS
	Err        error  // the transport error, if any
	// Sent is false only when the request certainly did not reach the
	// server: the base never got it, or net/http asked for a connection,
	// never obtained one, and failed before having one (see README,
	// "What is retried").
	Sent bool
	// Replayed: net/http itself resent the request on a new connection
	// within this attempt, after a reused connection failed.
	Replayed bool
	Retry    bool          // another attempt follows
	Wait     time.Duration // the wait before it
	// Reason says why another attempt was due, set when Retry or
	// BudgetExhausted is: one of the Reason constants, or "status_NNN"
	// for a 408, 502, 503 or 504.
	Reason string
	// BudgetExhausted: a retry was due but the Transport's retry budget was
	// spent, so none follows.
	BudgetExhausted bool
}

// call is one logical request: its key, its body source, and the state the
// retry policy needs across attempts. Whether the request may go out again
// is decided in one place, mayResend, which every path that would send it
// again asks.
type call struct {
	t        *Transport
	req      *http.Request   // the caller's, never modified
	ctx      context.Context // the caller's context, bounded by the moved client Timeout
	key      string
	origin   string // keyed.origin
	hooksKey string // originOf(req.URL), computed once for the hooksSeen lookups
	body     bodySource

	held    heldRef       // the bodies the caller's GetBody handed net/http
	last    trace         // what the latest attempt did on the wire
	pending error         // typed error to return if retries stop now (REQUEST_IN_PROCESS)
	code    string        // error_code of the latest answer, when it was read
	token   string        // the Chift token the latest attempt carried
	wait    time.Duration // before the next attempt
	// attemptCtx is the context Hooks.AttemptStart returned for the
	// latest attempt, c.ctx without that hook.
	attemptCtx context.Context

	// The flags, side by side: the call record is allocated for every
	// request, and scattered they would pad it by a word each.
	tidy   bool // the caller's key header must be rewritten as one canonical header
	absent bool // keyed.absent
	// maybeSent: some attempt may have reached the server and been
	// processed. It fails closed: only positive evidence keeps it false
	// (see unsent and proves).
	maybeSent  bool
	bodySpent  bool // an attempt tried to send the one-shot body: it cannot be sent again
	bodyHanded bool // the one-shot body went to the base transport, which closes it
	// unanswered: some attempt may have been processed and brought back no
	// answer from the server itself (an error after it may have been sent,
	// a resend within the attempt, a gateway's 502 or 504);
	// unansweredBefore is that as it stood before the latest attempt.
	unanswered, unansweredBefore bool
	reauthed                     bool // a 401 already led to a new token
	budgetOut                    bool // a retry was refused by the retry budget
	attemptOpen                  bool // the latest attempt has not been reported yet
	ownsTrace                    bool // callCtx answers httptrace's key with trace
	// attempt counts the attempts sent so far; an int32 fits the flags'
	// padding and keeps the call within its size class.
	attempt int32

	bo    *backoff.ExponentialBackOff // made on the first retry
	watch wireWatch
	trace httptrace.ClientTrace
	// Parts of the call that would otherwise be allocated on their own.
	shared   http.Request // the copy of the request all attempts share, made by request
	callCtx  callContext
	respBody callBody
	keyValue [1]string // the key header's value slice
}

func newCall(t *Transport, req *http.Request, k keyed, body bodySource) *call {
	c := &call{t: t, req: req, ctx: req.Context(), attemptCtx: req.Context(), key: k.key, tidy: k.tidy, absent: k.absent, body: body,
		hooksKey: t.originKey(req.URL)}
	c.watch.hook(&c.trace)
	return c
}

// mayResend answers "may this request go out again?" for every path that
// would resend it: a retry after an error or a status, a wait on
// REQUEST_IN_PROCESS, a new token after a 401. A one-shot body that went
// out cannot be replayed; a request that may have been processed is sent
// again only if repeating it cannot apply it twice.
func (c *call) mayResend() bool {
	if c.bodySpent {
		return false
	}
	return !c.maybeSent || c.idempotent()
}

// baseMayReplay: net/http may resend this attempt on its own (HTTP/1
// after a reused connection failed, HTTP/2 after a stream reset). Only
// when the call itself could resend it, and only through a base whose
// trace hooks fire: a resend nobody sees would hide an attempt that may
// have been processed.
func (c *call) baseMayReplay() bool {
	return c.idempotent() && !c.body.oneShot && c.t.hooksFire(c.hooksKey)
}

// nextWait is the next jittered exponential wait. The schedule is set up
// on the first retry: most requests never need one.
func (c *call) nextWait() time.Duration {
	if c.bo == nil {
		c.bo = &backoff.ExponentialBackOff{
			InitialInterval:     c.t.cfg.backoffInitial,
			RandomizationFactor: backoff.DefaultRandomizationFactor,
			Multiplier:          backoff.DefaultMultiplier,
			MaxInterval:         c.t.cfg.backoffMax,
			Stop:                backoff.Stop,
			Clock:               backoff.SystemClock,
		}
		c.bo.Reset()
	}
	return c.bo.NextBackOff()
}

// useLastResponse keeps a client from following redirects.
func useLastResponse(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// run is the attempt loop: send, let the policy decide, wait, send again.
// stop releases the call's context; it runs when run returns without a
// response, or when the caller closes the response body.
func (c *call) run(stop context.CancelFunc) (*http.Response, error) {
	defer c.closeUnsentBody()
	if h := &c.t.cfg.hooks; h.AttemptDone != nil || h.RequestDone != nil {
		defer c.endOnPanic()
	}
	resp, err := c.loop()
	if h := c.t.cfg.hooks.RequestDone; h != nil {
		c.requestDone(h, resp, err)
	}
	if l := c.t.cfg.logger; l != nil && err != nil {
		c.logFailure(l, err)
	}
	if err != nil || resp == nil {
		stop()
		c.held.closeUnread()
		return resp, err
	}
	// The body lives in the call, which outlives the response: no
	// allocation of its own.
	c.respBody = callBody{ReadCloser: resp.Body, stop: stop, held: &c.held}
	resp.Body = &c.respBody
	return resp, nil
}

// callBody is the response body the caller gets: closing it releases the
// call's context and the bodies GetBody handed out that nobody read.
type callBody struct {
	io.ReadCloser
	stop context.CancelFunc
	held *heldRef
}

func (b *callBody) Close() error {
	err := b.ReadCloser.Close()
	b.stop()
	b.held.closeUnread()
	return err
}

// callContext is the context every attempt of the call runs under: the
// caller's, with the call under callInfoKey and, when the caller's context
// holds no httptrace.ClientTrace of its own, the call's trace under
// httptrace's key. It lives in the call, so making it allocates nothing.
type callContext struct {
	context.Context
	c *call
}

func (x *callContext) Value(key any) any {
	if key == (callInfoKey{}) {
		return x.c
	}
	if x.c.ownsTrace && key == traceKey {
		return &x.c.trace
	}
	return x.Context.Value(key)
}

// traceKey is the context key under which httptrace.ContextClientTrace
// looks for a ClientTrace, learned once by asking it to look in a context
// that records the key; nil if httptrace does not find a trace that way.
// A callContext that answers it saves the context httptrace.WithClientTrace
// would allocate on every request.
var traceKey = learnTraceKey()

// keyProbe is a context that records the key of the last Value call and
// answers it with trace.
type keyProbe struct {
	context.Context
	asked any
	trace *httptrace.ClientTrace
}

func (p *keyProbe) Value(key any) any {
	p.asked = key
	return p.trace
}

func learnTraceKey() any {
	probe := &keyProbe{Context: context.Background(), trace: &httptrace.ClientTrace{}}
	if httptrace.ContextClientTrace(probe) != probe.trace {
		return nil
	}
	key := probe.asked
	// The key must be the one WithClientTrace stores the trace under.
	stored := &httptrace.ClientTrace{}
	if key == nil || httptrace.WithClientTrace(context.Background(), stored).Value(key) != stored {
		return nil
	}
	return key
}

// traceContext is the call's context carrying the call's trace for
// net/http, as httptrace.WithClientTrace would: through the callContext
// itself when the caller's context holds no trace of its own (then there
// is nothing to compose with), else through WithClientTrace, which makes
// both fire. The trace of a call this one is sent under (by a base that
// sends requests of its own with the attempt's context) is left out: its
// wire watch would count this request's connection as a resend of its own.
func (c *call) traceContext() context.Context {
	parent, enclosed := callerTrace(c.ctx)
	if traceKey != nil && parent == nil {
		c.ownsTrace = true
		return &c.callCtx
	}
	var ctx context.Context = &c.callCtx
	if enclosed && traceKey != nil {
		ctx = &traceOverride{Context: ctx, trace: parent}
	}
	return httptrace.WithClientTrace(ctx, &c.trace)
}

// callerTrace is the httptrace.ClientTrace ctx holds for the caller, seen
// past the calls ctx belongs to: enclosed reports that the trace on top was
// such a call's own.
func callerTrace(ctx context.Context) (trace *httptrace.ClientTrace, enclosed bool) {
	trace = httptrace.ContextClientTrace(ctx)
	for trace != nil {
		outer, ok := ctx.Value(callInfoKey{}).(*call)
		if !ok || trace != &outer.trace {
			return trace, enclosed
		}
		enclosed = true
		ctx = outer.ctx
		trace = httptrace.ContextClientTrace(ctx)
	}
	return nil, enclosed
}

// traceOverride answers httptrace's key with trace, which may be nil, in
// place of the trace its parent holds.
type traceOverride struct {
	context.Context
	trace *httptrace.ClientTrace
}

func (o *traceOverride) Value(key any) any {
	if key == traceKey {
		return o.trace
	}
	return o.Context.Value(key)
}

func (c *call) loop() (*http.Response, error) {
	shared := c.request()
	for {
		req, err := c.attemptRequest(shared)
		if err != nil {
			return nil, c.requestError(err)
		}
		if c.t.cfg.hooks.AttemptStart != nil {
			req = c.startAttempt(req)
		}
		c.attemptOpen = true
		resp, err := c.send(req)
		retry, final := c.checkRetry(resp, err)
		if !retry {
			return c.finish(resp, err, final)
		}
		if resp != nil {
			drainAndClose(resp.Body)
		}
		if err := sleep(c.ctx, c.wait); err != nil {
			return nil, c.requestError(context.Cause(c.ctx))
		}
	}
}

// ErrBasePanicked is the error the Done hooks see for an attempt, and its
// request, during which the base transport panicked; the panic then goes
// on to the caller.
var ErrBasePanicked = errors.New("saferetry: the base transport panicked")

// endOnPanic, deferred, runs the Done hooks of the attempt in flight and
// of the request when the base transport panics, so that no span is left
// open, and panics on.
func (c *call) endOnPanic() {
	p := recover()
	if p == nil {
		return
	}
	hooks := &c.t.cfg.hooks
	if c.attemptOpen && hooks.AttemptDone != nil {
		a := Attempt{Method: c.req.Method, URL: redactURL(c.req), Number: int(c.attempt), Err: ErrBasePanicked, Sent: true}
		a.Key, a.RequestID = c.t.keyOrRequestID(c.key)
		hooks.AttemptDone(c.attemptCtx, a)
	}
	if hooks.RequestDone != nil {
		c.requestDone(hooks.RequestDone, nil, ErrBasePanicked)
	}
	panic(p)
}

// startAttempt runs Hooks.AttemptStart for the attempt req is about to
// carry, on a copy of req with its own header.
func (c *call) startAttempt(req *http.Request) *http.Request {
	header := req.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	keyValues, had := req.Header[c.t.cfg.header]
	ctx := hookContext(c.t.cfg.hooks.AttemptStart(req.Context(), AttemptStart{Method: c.req.Method, URL: redactURL(c.req), Number: int(c.attempt) + 1, Header: header}), req.Context())
	// The key header is the Transport's: a hook that changed or dropped
	// it, under any spelling of its name, would send the attempt under
	// another key, or two, or none. It is put back as the request had it.
	stripKeyHeader(header, c.t.cfg.header)
	if had {
		header[c.t.cfg.header] = keyValues
	}
	c.attemptCtx = ctx
	out := req.WithContext(ctx)
	out.Header = header
	return out
}

// requestDone runs Hooks.RequestDone for the outcome the caller gets.
func (c *call) requestDone(h func(context.Context, RequestDone), resp *http.Response, err error) {
	d := RequestDone{Attempts: int(c.attempt), Err: err, BudgetExhausted: c.budgetOut, OutcomeUnknown: errors.Is(err, ErrOutcomeUnknown)}
	var apiErr *APIError
	switch {
	case resp != nil:
		d.StatusCode = resp.StatusCode
	case errors.As(err, &apiErr):
		d.StatusCode = apiErr.StatusCode
	}
	h(c.ctx, d)
}

// attemptBody is the body of the next attempt: the one made with the body
// source, when it has one no attempt took yet; else a new one from get, as
// the base transport may still hold the previous one.
func (c *call) attemptBody() (io.ReadCloser, error) {
	if first := c.body.first; first != nil {
		c.body.first = nil
		return first, nil
	}
	return c.body.get()
}

// closeUnsentBody closes a one-shot body that never reached the base
// transport (a token fetch failed first, say): the base closes the ones it
// gets, so every body is closed exactly once.
func (c *call) closeUnsentBody() {
	if c.body.oneShot && !c.bodyHanded {
		c.body.once.Close()
	}
	if c.body.first != nil { // no attempt took the caller's body
		c.body.first.Close()
	}
}

// finish hands the caller the outcome of the last attempt: a typed
// idempotency error, the transport error, or the response.
func (c *call) finish(resp *http.Response, err, final error) (*http.Response, error) {
	if final != nil {
		if resp != nil {
			drainAndClose(resp.Body)
		}
		return nil, final
	}
	if err != nil {
		return nil, c.requestError(err)
	}
	return resp, nil
}

// request builds the clone that all attempts share: the caller's request
// with the key set and a context that identifies the call and watches the
// wire.
func (c *call) request() *http.Request {
	c.callCtx = callContext{Context: c.ctx, c: c}
	ctx := c.traceContext()
	// A shallow copy: only the header map is written to, so only it is
	// copied; a full Clone would copy the URL and more on every request.
	// The copy lives in the call: WithContext, inlined, makes it on the
	// stack, and the call keeps its value.
	c.shared = *c.req.WithContext(ctx)
	clone := &c.shared
	if c.tidy {
		c.keyValue[0] = c.key
		clone.Header = withKey(c.req.Header, c.t.cfg.header, c.keyValue[:], c.absent)
	}
	clone.RequestURI = ""
	return clone
}

// getBody is the GetBody net/http gets, to rewind a body for a resend of
// its own; the caller's GetBody is watched there, so that every body it
// hands out is closed. The attempt's own body is not wrapped: net/http
// writes a known in-memory body together with the headers.
func (c *call) getBody() (io.ReadCloser, error) {
	if !c.body.callers {
		return c.body.get()
	}
	return c.held.get(c.body.get)
}

// attemptRequest gives each attempt its own copy of the shared request
// with a fresh body: the base transport may still hold the previous one.
// A request that must not be resent gives net/http no way to rewind its
// body (no GetBody), and never a nil body: HTTP/2 resends a bodiless
// request after a stream reset, even one that may have been processed.
func (c *call) attemptRequest(shared *http.Request) (*http.Request, error) {
	req := shared
	if c.attempt > 0 {
		copied := *shared
		req = &copied
	}
	replay := c.baseMayReplay()
	req.GetBody = nil
	switch {
	case c.body.oneShot:
		req.Body, req.ContentLength = c.body.once, c.body.length
	case c.body.get != nil:
		body, err := c.attemptBody() // given to the base, which closes it
		if err != nil {
			return nil, fmt.Errorf("saferetry: rewinding the request body: %w", err)
		}
		req.Body, req.ContentLength = body, c.body.length
		if replay {
			req.GetBody = c.getBody
		}
	case replay:
		req.Body, req.ContentLength = nil, 0
	default:
		req.Body, req.ContentLength = noReplayBody{}, 0
	}
	return req, nil
}

// requestError gives every transport failure the key and attempt count;
// typed API errors already carry the key.
func (c *call) requestError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) && !c.maybeSent {
		return err // a refusal (of the token request) that is all there is to say
	}
	if ctxErr := c.ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		err = context.Cause(c.ctx) // the client Timeout's TimeoutError, say
	}
	reqErr := &RequestError{
		Method: c.req.Method, URL: redactURL(c.req),
		// After a redirect, the earlier request may have been processed.
		Attempts: int(c.attempt), MaybeSent: c.maybeSent || c.origin != "", BudgetExhausted: c.budgetOut, Err: redactError(err),
	}
	reqErr.Key, reqErr.RequestID = c.reportedIDs()
	return reqErr
}

// reportedIDs is the key or the request id a failure of the call names:
// the call's own, or, after a redirect, the first request's of the chain.
func (c *call) reportedIDs() (key, requestID string) {
	return c.t.keyOrRequestID(cmp.Or(c.origin, c.key))
}

// checkRetry is the retry policy, run after each attempt. It returns an
// error only to stop with a typed idempotency error.
func (c *call) checkRetry(resp *http.Response, err error) (bool, error) {
	retry, final := c.classify(resp, err)
	if final != nil {
		c.pending = nil
	}
	if retry {
		retry = c.planWait(c.ctx, resp)
	}
	c.report(resp, err, retry)
	if retry {
		return true, nil
	}
	if final == nil {
		final = c.pending
	}
	if final == nil && resp != nil && c.answerUnknown(resp) {
		final = c.unknownAnswer(resp)
	}
	return false, final
}

// answerUnknown: the last answer, about to be handed back, does not tell
// what became of a request that may have been processed, and handed back
// as it is it would read as "failed": a caller retrying under a new key
// would create it twice. That is:
//   - a gateway's 502 or 504 to a keyed request that changes something:
//     the origin may have processed it;
//   - a 5xx, 401, 403, 407, 408, 421 or 429 (from a layer that did not look
//     the key up) after an attempt of this keyed request that may have been
//     processed without an answer, or after net/http resent it;
//   - any error status to a request that follows the redirect of a keyed
//     request (a 303's GET): the earlier request may have been processed.
func (c *call) answerUnknown(resp *http.Response) bool {
	s := resp.StatusCode
	switch {
	case c.origin != "":
		return s >= 400
	case c.key == "" || !c.mutates():
		return false
	case s == http.StatusBadGateway || s == http.StatusGatewayTimeout:
		return true
	}
	return (c.unansweredBefore || c.last.replayed()) && silentOnKey(s)
}

// silentOnKey: a status that comes from a layer that did not look the key
// up (a proxy, a load balancer, the authentication), so says nothing of an
// earlier attempt under it.
func silentOnKey(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired,
		http.StatusRequestTimeout, http.StatusMisdirectedRequest, http.StatusTooManyRequests:
		return true
	}
	return status >= 500
}

// mutates: the method may change something on the server.
func (c *call) mutates() bool {
	switch strings.ToUpper(c.req.Method) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// unknownAnswer is the error for answerUnknown: ErrOutcomeUnknown with the
// key (the chain's first, after a redirect), the last answer inside as an
// *APIError.
func (c *call) unknownAnswer(resp *http.Response) error {
	reqErr := &RequestError{
		Method: c.req.Method, URL: redactURL(c.req), Attempts: int(c.attempt),
		MaybeSent: true, BudgetExhausted: c.budgetOut, Err: c.apiError(resp),
	}
	reqErr.Key, reqErr.RequestID = c.reportedIDs()
	return reqErr
}

// classify decides whether the attempt may be repeated and whether its
// answer is a typed idempotency error.
func (c *call) classify(resp *http.Response, err error) (retry bool, final error) {
	uncertainBefore := c.maybeSent
	c.unansweredBefore = c.unanswered
	c.pending, c.code = nil, ""
	if err != nil {
		if !c.unsent(err) {
			c.maybeSent, c.unanswered = true, true
		}
		if c.ctx.Err() != nil || isDefiniteRejection(err) || errors.Is(err, ErrBodyLength) {
			// The context ended, the token endpoint refused the
			// credentials, or GetBody gave a body of another length than
			// declared: another attempt would meet the same.
			return false, nil
		}
		return c.mayResend(), nil
	}
	if c.last.replayed() || !c.proves(resp) {
		c.maybeSent = true
	}
	if c.last.replayed() || resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
		c.unanswered = true
	}
	if c.last.replayed() && !c.idempotent() {
		// The base transport sent it again on its own although it could
		// not rewind the body: processed once, or twice.
		return false, c.requestError(errBaseReplayed)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return c.reauthenticate(), nil
	case http.StatusConflict:
		return c.classifyConflict(resp, uncertainBefore || c.last.replayed())
	case http.StatusRequestTimeout, http.StatusBadGateway, http.StatusGatewayTimeout,
		http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return c.mayResend(), nil
	}
	return false, nil
}

// errBaseReplayed: net/http (or another base transport) resent a request
// within one attempt that the policy forbids resending.
var errBaseReplayed = errors.New("saferetry: the base transport resent a request that must not be resent; it may have been processed twice")

// unsent: the latest attempt ended in err, which proves the request never
// reached the server. The proof is that the base transport never got it,
// or that net/http asked for a connection (so its trace hooks are live),
// never obtained one (net/http writes nothing before it has one), and
// failed the way it fails before having one. A base that reports nothing
// proves nothing.
func (c *call) unsent(err error) bool {
	return !c.last.handed || (c.last.askedConn && c.last.conns == 0 && beforeConnection(err))
}

// beforeConnection: err is of a kind net/http returns before it has a
// connection: a dial, DNS, proxy CONNECT or TLS handshake failure. The
// context ending (or the attempt timing out) is not one: a base may have
// sent the request by another path meanwhile.
func beforeConnection(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && (opErr.Op == "dial" || opErr.Op == "proxyconnect") {
		return true
	}
	var dnsErr *net.DNSError
	var recordErr tls.RecordHeaderError
	var verifyErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var timeout interface{ Timeout() bool }
	switch {
	case errors.As(err, &dnsErr), errors.As(err, &recordErr), errors.As(err, &verifyErr), errors.As(err, &alert):
		return true
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrAttemptTimeout):
		return false
	}
	return errors.As(err, &timeout) && timeout.Timeout() // net/http's TLS handshake timeout
}

// proves: the answer shows that the request was not processed. 401 under
// Chift auth (the credentials were refused), 429 where the API documents
// that rate limiting comes first (zerohash), 503 with zerohash's
// "zh-allow-retry: true".
func (c *call) proves(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return c.t.auth != nil
	case http.StatusTooManyRequests:
		return c.t.cfg.rateLimitFirst
	case http.StatusServiceUnavailable:
		return c.t.cfg.rateLimitFirst && resp.Header.Get("Zh-Allow-Retry") == "true"
	}
	return false
}

// reauthenticate answers a 401 when Chift auth is on: the token is
// replaced and the request tried once more, beyond the retry limit (a 401
// means nothing was processed), if it may go out again at all.
func (c *call) reauthenticate() bool {
	if c.t.auth == nil || c.reauthed || c.token == "" || !c.mayResend() {
		return false
	}
	c.reauthed = true
	c.t.auth.invalidate(c.token)
	return true
}

// retryLimit is the number of retries the call may make: the Transport's,
// and one more once a 401 led to a new token.
func (c *call) retryLimit() int {
	if c.reauthed {
		return c.t.cfg.maxRetries + 1
	}
	return c.t.cfg.maxRetries
}

// classifyConflict reads a 409 as the idempotency protocol's own only when
// that reading is certain, which takes Chift's error_code: Chift also
// answers 409 for business conflicts, and a server that stores answers
// replays a business 409 to every retry of the request that earned it.
//
// A bare 409 under the default header, answering a retry after an attempt
// of unknown outcome, is either the draft's "the original is still in
// progress" (express-idempotency sends exactly that: a bare 409 with no
// marker) or the stored answer of the lost attempt; nothing on the wire
// tells them apart (draft-ietf-httpapi-idempotency-key-header defines no
// marker). So it is retried with the same key while retries remain, which
// is harmless either way, and if it persists it is returned as the response:
// the server's answer, never ErrRequestInProcess.
func (c *call) classifyConflict(resp *http.Response, uncertain bool) (bool, error) {
	if c.key == "" {
		return false, nil
	}
	apiErr := c.apiError(resp)
	c.code = apiErr.Code
	switch {
	case errors.Is(apiErr, ErrRequestAlreadyProcessed):
		return false, apiErr
	case errors.Is(apiErr, ErrRequestInProcess):
		c.pending = apiErr
		return c.mayResend(), nil
	case c.t.cfg.draftConflicts && apiErr.Code == "" && uncertain && !replayed(resp):
		return c.mayResend(), nil
	}
	return false, nil
}

// replayed: the server marks the answer as a stored one (Stripe's
// Idempotent-Replayed: true), so it is certainly not "in progress".
func replayed(resp *http.Response) bool {
	return strings.EqualFold(resp.Header.Get("Idempotent-Replayed"), "true")
}

// apiError decodes an error response without consuming its body, so the
// caller can still read it if the response is returned.
func (c *call) apiError(resp *http.Response) *APIError {
	err := CheckResponse(resp).(*APIError)
	err.Key, err.RequestID = c.t.keyOrRequestID(c.key)
	return err
}

// idempotent: repeating the request cannot apply it twice.
func (c *call) idempotent() bool {
	switch c.req.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return c.key != "" && c.t.cfg.keyDeduplicates
}

// planWait sets the wait before the next attempt and reports whether that
// attempt should happen: retries left, a Retry-After within the cap, and a
// context deadline that leaves time for it.
func (c *call) planWait(ctx context.Context, resp *http.Response) bool {
	if int(c.attempt) > c.retryLimit() {
		return false
	}
	c.wait = c.nextWait()
	if d, ok := askedWait(resp, c.t.cfg.rateLimitFirst); ok {
		if d > c.t.cfg.maxRetryAfter {
			return false
		}
		c.wait = max(d, c.wait)
	}
	if !fitsBefore(ctx, c.wait) {
		return false
	}
	if b := c.t.budget; b != nil && !b.withdraw() {
		c.budgetOut = true
		return false
	}
	return true
}

// askedWait is how long resp asks the client to wait before its next
// request: its Retry-After (RFC 9110, 10.2.3; seconds or a date), or, for a
// 429 without one from zerohash, the 10-second lock-out zerohash documents
// after its rate limit is hit (ZeroHashRateLimitWait). ok is false when it
// asks nothing. The transport and both create flows read waits here.
func askedWait(resp *http.Response, zeroHash bool) (d time.Duration, ok bool) {
	if resp == nil {
		return 0, false
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		return d, true
	}
	if zeroHash && resp.StatusCode == http.StatusTooManyRequests {
		return ZeroHashRateLimitWait, true
	}
	return 0, false
}

// fitsBefore: a wait of d ends before ctx's deadline, if it has one.
func fitsBefore(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) >= d
}

func (c *call) report(resp *http.Response, err error, retry bool) {
	cfg := &c.t.cfg
	if cfg.logger == nil && cfg.observer == nil && cfg.hooks.AttemptDone == nil {
		return
	}
	a := Attempt{
		Method: c.req.Method, URL: redactURL(c.req), Number: int(c.attempt),
		Err: redactError(err), Sent: resp != nil || !c.unsent(err), Replayed: c.last.replayed(), Retry: retry,
		BudgetExhausted: c.budgetOut,
	}
	a.Key, a.RequestID = c.t.keyOrRequestID(c.key)
	if resp != nil {
		a.StatusCode, a.Code = resp.StatusCode, c.code
	}
	if retry {
		a.Wait = c.wait
	}
	if retry || c.budgetOut {
		a.Reason = retryReason(resp, err, c.code)
	}
	c.attemptOpen = false
	if cfg.hooks.AttemptDone != nil {
		cfg.hooks.AttemptDone(c.attemptCtx, a)
	}
	if cfg.observer != nil {
		cfg.observer(a)
	}
	if cfg.logger != nil {
		logAttempt(c.ctx, cfg.logger, a)
	}
}

// parseRetryAfter reads both forms of Retry-After: delay-seconds and an
// HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	const maxWait = 24 * time.Hour
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if allDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxWait/time.Second) {
			return maxWait, true // only an overflow can fail here
		}
		return time.Duration(secs) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return min(max(at.Sub(now), 0), maxWait), true
	}
	return 0, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func drainAndClose(body io.ReadCloser) {
	if body == nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	body.Close()
}
