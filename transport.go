package saferetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Transport is an http.RoundTripper that makes writes safe to retry: it
// stamps one idempotency key per logical request, retries what is safe to
// retry with the same key and a byte-identical body, and turns the
// idempotency 409s into typed errors. It is safe for concurrent use.
// Make one with NewTransport or Wrap: a zero Transport sends nothing and
// answers every request with an error saying so.
type Transport struct {
	base   http.RoundTripper
	cfg    config
	auth   *chiftAuth   // nil without WithChiftAuth
	budget *retryBudget // nil with WithoutRetryBudget
	// hooksSeen holds the origins (scheme://host) for which the base has
	// fired net/http's trace hooks, so a resend it makes on its own within
	// an attempt can be seen. Until then requests to an origin give it no
	// means to resend anything.
	hooksSeen sync.Map
	// lastOrigin is the origin of the latest request, so that a Transport
	// that talks to one API builds its origin string once.
	lastOrigin atomic.Pointer[origin]
}

type origin struct {
	scheme, host, key string
	hooksFire         atomic.Bool // hooksSeen holds key: read without the map
}

func originOf(u *url.URL) string { return u.Scheme + "://" + u.Host }

// originKey is originOf(u), from lastOrigin when it is u's origin.
func (t *Transport) originKey(u *url.URL) string {
	if o := t.lastOrigin.Load(); o != nil && o.scheme == u.Scheme && o.host == u.Host {
		return o.key
	}
	o := &origin{scheme: u.Scheme, host: u.Host, key: originOf(u)}
	t.lastOrigin.Store(o)
	return o.key
}

// hooksFire: the base has fired the trace hooks for origin (originOf).
// The latest origin remembers a yes, so a Transport that talks to one API
// reads the map only until then.
func (t *Transport) hooksFire(origin string) bool {
	o := t.lastOrigin.Load()
	if o != nil && o.key == origin && o.hooksFire.Load() {
		return true
	}
	_, ok := t.hooksSeen.Load(origin)
	if ok && o != nil && o.key == origin {
		o.hooksFire.Store(true)
	}
	return ok
}

var _ http.RoundTripper = (*Transport)(nil)

var errZeroTransport = errors.New("saferetry: this Transport was not made by NewTransport or Wrap, and sends nothing")

// NewTransport returns a Transport over base (nil: http.DefaultTransport,
// which is used, never modified).
func NewTransport(base http.RoundTripper, opts ...Option) (*Transport, error) {
	cfg, err := newConfig("NewTransport", opts)
	if err != nil {
		return nil, err
	}
	return newTransport(base, cfg)
}

func newTransport(base http.RoundTripper, cfg config) (*Transport, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	if _, ok := base.(*Transport); ok {
		return nil, errors.New("saferetry: base is already a *saferetry.Transport; retries would multiply")
	}
	t := &Transport{base: base, cfg: cfg}
	if !cfg.budgetOff {
		t.budget = newRetryBudget(cfg.budgetRatio, cfg.budgetPerSec, time.Now)
	}
	if cfg.chiftCreds != nil {
		t.auth = newChiftAuth(*cfg.chiftCreds, cfg.apiOrigin, base)
	}
	return t, nil
}

// Wrap returns a copy of c whose transport is a Transport over c's
// transport. c is not modified; nil c means a new client with
// http.DefaultTransport.
//
// c.Timeout moves into the Transport: the copy has Timeout 0 and the
// Transport bounds each request the copy sends (all its attempts, their
// waits and the reading of the response body) by it. Left on the client,
// net/http's own timer would replace the Transport's error by a plain
// string when it fires, losing ErrOutcomeUnknown and the key. A redirect
// is a new request with a bound of its own.
func Wrap(c *http.Client, opts ...Option) (*http.Client, error) {
	cfg, err := newConfig("Wrap", opts)
	if err != nil {
		return nil, err
	}
	hc, _, err := wrap(c, cfg)
	return hc, err
}

func wrap(c *http.Client, cfg config) (*http.Client, *Transport, error) {
	if c == nil {
		c = &http.Client{}
	}
	cfg.callTimeout = c.Timeout
	t, err := newTransport(c.Transport, cfg)
	if err != nil {
		return nil, nil, err
	}
	wrapped := *c
	wrapped.Transport, wrapped.Timeout = t, 0
	wrapped.CheckRedirect = checkRedirect(c.CheckRedirect)
	return &wrapped, t, nil
}

// RoundTrip carries one logical request through as many attempts as the
// retry policy allows. It never modifies req and closes req.Body exactly
// once. Besides a response it returns an error for a 409
// REQUEST_ALREADY_PROCESSED and a REQUEST_IN_PROCESS that outlived the
// retries (Chift's error_code): those answers are the idempotency protocol
// talking to the transport about its own retries.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.base == nil {
		closeBody(req)
		return nil, errZeroTransport
	}
	//lint:ignore SA1019 read, never set: it is how http.Client's Timeout shows
	if req.Cancel != nil {
		// What http.Client sets when its Timeout runs over a transport it
		// does not know; its timer would then replace our typed errors.
		closeBody(req)
		return nil, errClientTimeout
	}
	h := hopOf(req)
	k, err := t.key(req, h)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ctx, stop := req.Context(), context.CancelFunc(func() {})
	if d := t.cfg.callTimeout; d > 0 {
		ctx, stop = context.WithTimeoutCause(ctx, d, &TimeoutError{Limit: d})
	}
	body, err := newBodySource(ctx, req, t.cfg.maxBufferedBody)
	if err != nil {
		stop()
		reqErr := &RequestError{Method: req.Method, URL: redactURL(req), Err: err}
		reqErr.Key, reqErr.RequestID = t.keyOrRequestID(k.key)
		return nil, reqErr
	}
	if t.budget != nil {
		t.budget.deposit()
	}
	c := newCall(t, req, k, body)
	if h := t.cfg.hooks.RequestStart; h != nil {
		start := RequestStart{API: t.protocol(), Method: req.Method, URL: redactURL(req), Step: stepOf(ctx)}
		start.Key, start.RequestID = t.keyOrRequestID(k.key)
		ctx = hookContext(h(ctx, start), ctx)
	}
	c.ctx, c.attemptCtx = ctx, ctx
	c.inherit(h, k.origin)
	return c.run(stop)
}

// keyOrRequestID says what the value v of the Transport's header is: an
// idempotency key when the server deduplicates on it, a request id
// otherwise (zerohash's X-REQUEST-ID).
func (t *Transport) keyOrRequestID(v string) (key, requestID string) {
	if t.cfg.keyDeduplicates {
		return v, ""
	}
	return "", v
}

// CloseIdleConnections closes the base transport's idle connections when
// it has such a method (net/http's Transport and HTTP/2's do), so that
// http.Client.CloseIdleConnections reaches them through the Transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// errClientTimeout refuses a request sent by an http.Client with a Timeout
// (or a deprecated Request.Cancel) around a bare Transport.
var errClientTimeout = errors.New("saferetry: the http.Client sending this request has a Timeout (net/http marks the request with Request.Cancel), and its timer would replace ErrOutcomeUnknown and the key by a plain string: " +
	"build the client with saferetry.Wrap, which moves the Timeout into the Transport, or set Timeout 0 and bound requests with a context deadline or WithAttemptTimeout")

// TimeoutError is the cause of a request ended by the Timeout of the
// http.Client that Wrap or NewClient wrapped. It matches
// context.DeadlineExceeded and is a net.Error whose Timeout is true, as
// http.Client's own timeout error is.
type TimeoutError struct {
	Limit time.Duration // the client's Timeout
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("saferetry: the http.Client Timeout of %v elapsed", e.Limit)
}

// Is matches context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Timeout is part of net.Error: true.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary is part of net.Error; true, as for http.Client's own.
func (e *TimeoutError) Temporary() bool { return true }

// keyed is the key a request travels with.
type keyed struct {
	key string
	// origin: the key of the keyed request whose redirect (301, 302, 303)
	// http.Client follows with this one; that request may have been
	// processed, so this one's failures are reported under its key.
	origin string
	// tidy: the header must be rewritten as the one canonical header with
	// the key (the caller wrote it in another case, twice, or not at all),
	// or, with no key, removed (a copy of an earlier request's key).
	tidy bool
	// absent: the request holds the key header under no spelling.
	absent bool
}

// key returns the key the request carries (its header found whatever the
// case of the name), a new one if its method is stamped, or "" when it gets
// none. net/http's nil marker (Header[name] = nil: "idempotent, send no
// header") counts as no key.
func (t *Transport) key(req *http.Request, h hop) (keyed, error) {
	values, canonical, absent := headerValues(req.Header, t.cfg.header)
	if h.origin != "" {
		// http.Client copied the caller's key onto the new request: it is
		// the earlier request's key, not this one's.
		values = slices.DeleteFunc(values, func(v string) bool { return v == h.origin })
	}
	if len(values) > 0 {
		if v := distinctValues(values); len(v) > 1 {
			return keyed{}, fmt.Errorf("%w: %d different %s values on the request (%s); one is needed", ErrInvalidKey, len(v), t.cfg.headerShown, strings.Join(v, ", "))
		}
		return keyed{key: values[0], tidy: !canonical, origin: h.origin}, t.validateKey(values[0])
	}
	if h.same != nil {
		return keyed{key: h.same.key, tidy: true}, nil // a 307 or 308: the same request
	}
	if !t.cfg.stampAll && !t.stamps(req.Method) {
		return keyed{origin: h.origin, tidy: h.origin != "" && !canonical}, nil
	}
	key, err := t.cfg.newKey()
	if err != nil {
		return keyed{}, fmt.Errorf("saferetry: generating key: %w", err)
	}
	if !t.cfg.customKeys {
		return keyed{key: key, tidy: true, absent: absent, origin: h.origin}, nil // a UUIDv4: valid by construction
	}
	return keyed{key: key, tidy: true, absent: absent, origin: h.origin}, t.validateKey(key)
}

// stamps: requests of method get a key; the method as net/http spells the
// standard ones needs no case folding.
func (t *Transport) stamps(method string) bool {
	if stamped, ok := t.cfg.stampMethods[method]; ok {
		return stamped
	}
	return t.cfg.stampMethods[strings.ToUpper(method)]
}

// headerValues collects the values of name under every spelling of it in
// h. canonical reports that h holds exactly one value, under the canonical
// name, so the request can travel as it is.
func headerValues(h http.Header, name string) (values []string, canonical, absent bool) {
	spellings := 0
	for k, vs := range h {
		if k == name || strings.EqualFold(k, name) {
			spellings++
			values = append(values, vs...)
		}
	}
	return values, spellings == 1 && len(h[name]) == 1, spellings == 0
}

func distinctValues(values []string) []string {
	var out []string
	for _, v := range values {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// withKey returns a copy of h whose only key header is name with the
// values keyValue (one key, or none when empty or holding ""); the value
// slices are shared with h, which is not modified. The copy is whole
// (maps.Clone, which does not hash each entry again); absent says h holds
// no spelling of name, so there is none to strip from it.
func withKey(h http.Header, name string, keyValue []string, absent bool) http.Header {
	out := maps.Clone(h)
	if out == nil {
		out = make(http.Header, 1)
	}
	if !absent {
		stripKeyHeader(out, name)
	}
	if len(keyValue) > 0 && keyValue[0] != "" {
		out[name] = keyValue
	}
	return out
}

// stripKeyHeader deletes every spelling of name from h.
func stripKeyHeader(h http.Header, name string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
}

func (t *Transport) validateKey(key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("%w in %s: %s", ErrInvalidKey, t.cfg.headerShown, err)
	}
	if t.cfg.keyMustBeUUID {
		if u, err := uuid.Parse(key); err != nil || u.Version() != 4 || len(key) != 36 {
			return fmt.Errorf("%w in %s: %q is not a UUIDv4 (zerohash asks for one)", ErrInvalidKey, t.cfg.headerShown, key)
		}
	}
	return nil
}

// ValidateKey reports whether key can be used as an idempotency key: not
// empty, no space at either end (net/http trims them on the wire), at most
// 255 characters (Chift's varchar(255)), and printable ASCII only. The
// error matches ErrInvalidKey.
func ValidateKey(key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidKey, err)
	}
	return nil
}

func validateKey(key string) error {
	if strings.TrimSpace(key) == "" {
		return errors.New("key is empty")
	}
	if strings.TrimSpace(key) != key {
		return fmt.Errorf("key %q begins or ends with a space, which net/http trims on the wire: the server would store another key", key)
	}
	if len(key) > maxKeyLength {
		return fmt.Errorf("key is %d characters long, more than %d", len(key), maxKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if b := key[i]; b < 0x20 || b >= 0x7f {
			return fmt.Errorf("key holds byte %#x at position %d; only printable ASCII is allowed", b, i)
		}
	}
	return nil
}

// keysPerBatch is how many UUIDv4 keys newUUIDKey makes at once.
const keysPerBatch = 16

// keyBatch is a run of keys made together: the text of keysPerBatch
// UUIDv4s in one string, handed out in order.
type keyBatch struct {
	text string // keysPerBatch keys of uuidTextLen characters each
	next int    // the next key to hand out; keysPerBatch when all are out
}

// uuidTextLen is the length of a UUID's text, 8-4-4-4-12 hex digits.
const uuidTextLen = 36

// keyBatches holds batches with keys left. A batch is used by one
// goroutine at a time, between Get and Put, so no key is handed out twice.
var keyBatches = sync.Pool{New: func() any { return &keyBatch{next: keysPerBatch} }}

// newUUIDKey returns a new UUIDv4 (RFC 9562, section 5.4) from crypto/rand,
// in its 36-character text form. Keys are made keysPerBatch at a time: one
// read of crypto/rand and one allocation serve 16 requests. A key is a
// substring of its batch's string, so a key the program keeps keeps the
// batch's 576 bytes alive.
func newUUIDKey() (string, error) {
	b := keyBatches.Get().(*keyBatch)
	defer keyBatches.Put(b)
	if b.next == keysPerBatch {
		if err := b.refill(); err != nil {
			return "", err
		}
	}
	key := b.text[b.next*uuidTextLen : (b.next+1)*uuidTextLen]
	b.next++
	return key, nil
}

// refill makes the batch's keys.
func (b *keyBatch) refill() error {
	var random [keysPerBatch * 16]byte
	if _, err := rand.Read(random[:]); err != nil {
		return err
	}
	var text [keysPerBatch * uuidTextLen]byte
	for i := range keysPerBatch {
		var u uuid.UUID
		copy(u[:], random[i*16:])
		u[6] = (u[6] & 0x0f) | 0x40 // version 4
		u[8] = (u[8] & 0x3f) | 0x80 // the RFC 9562 variant
		encodeUUID(text[i*uuidTextLen:(i+1)*uuidTextLen], u)
	}
	b.text, b.next = string(text[:]), 0
	return nil
}

// encodeUUID writes u's text form, lower-case hex digits grouped
// 8-4-4-4-12, into dst, which holds uuidTextLen bytes.
func encodeUUID(dst []byte, u uuid.UUID) {
	hex.Encode(dst[0:8], u[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], u[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], u[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], u[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:36], u[10:16])
}

// callInfoKey carries the logical request's *call in the contexts of its
// attempts, so the key can be read back from a response.
type callInfoKey struct{}

// KeyFromResponse returns the idempotency key the transport used for the
// request that produced resp, or "" if it carried none (a request id that
// is not deduplicated on, zerohash's X-REQUEST-ID, is not a key: read the
// echo with ServerRequestID). It is KeyFromError's counterpart.
func KeyFromResponse(resp *http.Response) string {
	if resp == nil || resp.Request == nil {
		return ""
	}
	key, _ := keysOfRequest(resp.Request)
	return key
}

// RequestIDFromResponse returns the request id the transport stamped on
// the request that produced resp when its header is not deduplicated on
// (zerohash's X-REQUEST-ID), or "". KeyFromResponse gives an idempotency
// key; at most one of the two is set.
func RequestIDFromResponse(resp *http.Response) string {
	if resp == nil || resp.Request == nil {
		return ""
	}
	_, requestID := keysOfRequest(resp.Request)
	return requestID
}

// ServerRequestID returns the request id the server echoed (X-Request-Id).
func ServerRequestID(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Header.Get("X-Request-Id")
}

// keysOfRequest returns the idempotency key or the request id req carried
// (at most one is set): the Transport's, or, for a request it did not
// send, the value of a header the APIs define.
func keysOfRequest(req *http.Request) (key, requestID string) {
	if c, ok := req.Context().Value(callInfoKey{}).(*call); ok {
		return c.reportedIDs()
	}
	for _, h := range []string{DefaultRequestIDHeader, ChiftRequestIDHeader} {
		if v := req.Header.Get(h); v != "" {
			return v, ""
		}
	}
	return "", req.Header.Get(ZeroHashRequestIDHeader)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
