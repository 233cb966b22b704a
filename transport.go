package saferetry

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Transport is an http.RoundTripper that makes writes safe to retry: it
// stamps one idempotency key per logical request, retries what is safe to
// retry with the same key and a byte-identical body, and turns the
// idempotency 409s into typed errors. It is safe for concurrent use.
type Transport struct {
	base   http.RoundTripper
	cfg    config
	auth   *chiftAuth   // nil without WithChiftAuth
	budget *retryBudget // nil with WithoutRetryBudget
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport over base (nil: http.DefaultTransport,
// which is used, never modified).
func NewTransport(base http.RoundTripper, opts ...Option) (*Transport, error) {
	cfg, err := newConfig(opts)
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
func Wrap(c *http.Client, opts ...Option) (*http.Client, error) {
	cfg, err := newConfig(opts)
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
	t, err := newTransport(c.Transport, cfg)
	if err != nil {
		return nil, nil, err
	}
	wrapped := *c
	wrapped.Transport = t
	return &wrapped, t, nil
}

// RoundTrip carries one logical request through as many attempts as the
// retry policy allows. It never modifies req and closes req.Body exactly
// once. Besides a response it returns an error for a 409
// REQUEST_ALREADY_PROCESSED, a REQUEST_IN_PROCESS that outlived the retries
// and a 422 key reuse: those answers are the idempotency protocol talking to
// the transport about its own retries.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key, err := t.key(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	body, err := newBodySource(req, t.cfg.maxBufferedBody)
	if err != nil {
		return nil, &RequestError{Method: req.Method, URL: redactURL(req), Key: key, Err: err}
	}
	if t.budget != nil {
		t.budget.deposit()
	}
	return newCall(t, req, key, body).run()
}

// key returns the key the request carries, a new one if its method is
// stamped, or "" when it gets none.
func (t *Transport) key(req *http.Request) (string, error) {
	if values, ok := req.Header[t.cfg.header]; ok {
		if len(values) != 1 {
			return "", fmt.Errorf("%w: %d %s headers on the request; one is needed", ErrInvalidKey, len(values), t.cfg.header)
		}
		return values[0], t.validateKey(values[0])
	}
	if !t.cfg.stampAll && !t.cfg.stampMethods[req.Method] {
		return "", nil
	}
	key, err := t.cfg.newKey()
	if err != nil {
		return "", fmt.Errorf("saferetry: generating key: %w", err)
	}
	return key, t.validateKey(key)
}

func (t *Transport) validateKey(key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("%w in %s: %s", ErrInvalidKey, t.cfg.header, err)
	}
	if t.cfg.keyMustBeUUID {
		if u, err := uuid.Parse(key); err != nil || u.Version() != 4 || len(key) != 36 {
			return fmt.Errorf("%w in %s: %q is not a UUIDv4", ErrInvalidKey, t.cfg.header, key)
		}
	}
	return nil
}

// ValidateKey reports whether key can be used as an idempotency key: not
// empty after trimming, at most 255 characters (Chift's varchar(255)), and
// printable ASCII only.
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

// newUUIDKey makes a UUIDv4 from crypto/rand into a value on the stack:
// uuid.NewRandom would put it on the heap, on every request.
func newUUIDKey() (string, error) {
	var u uuid.UUID
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = (u[6] & 0x0f) | 0x40 // version 4
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return u.String(), nil
}

// callInfoKey carries the logical request's *call in the contexts of its
// attempts, so the key can be read back from a response.
type callInfoKey struct{}

// RequestKey returns the idempotency key the transport used for the request
// that produced resp, or "" if it carried none.
func RequestKey(resp *http.Response) string {
	if resp == nil || resp.Request == nil {
		return ""
	}
	return keyOfRequest(resp.Request)
}

// ServerRequestID returns the request id the server echoed (X-Request-Id).
func ServerRequestID(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Header.Get("X-Request-Id")
}

func keyOfRequest(req *http.Request) string {
	if c, ok := req.Context().Value(callInfoKey{}).(*call); ok {
		return c.key
	}
	for _, h := range []string{DefaultRequestIDHeader, ChiftRequestIDHeader, ZeroHashRequestIDHeader} {
		if v := req.Header.Get(h); v != "" {
			return v
		}
	}
	return ""
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// redactURL drops user info from the URL used in errors and logs.
func redactURL(req *http.Request) string {
	if req.URL == nil {
		return ""
	}
	u := *req.URL
	u.User = nil
	return u.String()
}
