package saferetry

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Header names of the two APIs the presets configure.
const (
	DefaultRequestIDHeader  = "Idempotency-Key"
	ChiftRequestIDHeader    = "X-Chift-Client-RequestId"
	ZeroHashRequestIDHeader = "X-Request-Id"
)

// Defaults, chosen for APIs that create money movements: a few retries
// spread over a few seconds, so a brief outage is absorbed without turning a
// long one into a storm.
const (
	DefaultMaxRetries      = 3
	DefaultBackoffInitial  = 250 * time.Millisecond
	DefaultBackoffMax      = 5 * time.Second
	DefaultMaxRetryAfter   = 30 * time.Second
	DefaultMaxBufferedBody = 4 << 20
	// DefaultChiftAttemptTimeout bounds one attempt under WithChift: above
	// the ~31 s Chift may spend retrying a rate-limited connector.
	DefaultChiftAttemptTimeout = 90 * time.Second
	maxKeyLength               = 255
)

// Option configures a Transport, Wrap or NewClient. An invalid value makes
// the constructor return an error that names the option.
type Option func(*config) error

type config struct {
	header          string
	stampAll        bool
	stampMethods    map[string]bool
	keyDeduplicates bool // the server dedups on the key: a keyed request is idempotent
	draftConflicts  bool // bare 409 / 422 follow the IETF Idempotency-Key draft
	keyMustBeUUID   bool
	rateLimitFirst  bool // a 429 means the request was not processed
	maxRetries      int
	backoffInitial  time.Duration
	backoffMax      time.Duration
	attemptTimeout  time.Duration
	maxRetryAfter   time.Duration
	maxBufferedBody int64
	logger          *slog.Logger
	observer        func(Attempt)
	newKey          func() (string, error)
	httpClient      *http.Client
	signer          *zeroHashSigner
	apiOrigin       *url.URL
	clock           func() time.Time
	chiftCreds      *ChiftCredentials
	timeoutSet      bool // WithAttemptTimeout was given: presets keep their hands off
	budgetRatio     float64
	budgetPerSec    float64
	budgetOff       bool
}

func defaultConfig() config {
	return config{
		header:          DefaultRequestIDHeader,
		stampMethods:    map[string]bool{http.MethodPost: true, http.MethodPatch: true},
		keyDeduplicates: true,
		draftConflicts:  true,
		maxRetries:      DefaultMaxRetries,
		backoffInitial:  DefaultBackoffInitial,
		backoffMax:      DefaultBackoffMax,
		maxRetryAfter:   DefaultMaxRetryAfter,
		maxBufferedBody: DefaultMaxBufferedBody,
		newKey:          newUUIDKey,
		budgetRatio:     DefaultRetryRatio,
		budgetPerSec:    DefaultRetriesPerSec,
	}
}

func newConfig(opts []Option) (config, error) {
	cfg := defaultConfig()
	var errs []error
	for i, opt := range opts {
		if opt == nil {
			errs = append(errs, fmt.Errorf("saferetry: option %d is nil", i))
			continue
		}
		if err := opt(&cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cfg.finishAuth(); err != nil {
		errs = append(errs, err)
	}
	if cfg.backoffInitial > cfg.backoffMax {
		errs = append(errs, fmt.Errorf("saferetry: WithBackoff: initial %v is greater than max %v", cfg.backoffInitial, cfg.backoffMax))
	}
	return cfg, errors.Join(errs...)
}

// WithRequestIDHeader sets the header that carries the idempotency key
// (default "Idempotency-Key"). Bare 409 and 422 answers are read the IETF
// draft's way only for the default header.
func WithRequestIDHeader(name string) Option {
	return func(c *config) error {
		name = strings.TrimSpace(name)
		if name == "" || !validHeaderName(name) {
			return fmt.Errorf("saferetry: WithRequestIDHeader: %q is not a valid header name", name)
		}
		c.header = textproto.CanonicalMIMEHeaderKey(name)
		c.draftConflicts = c.header == DefaultRequestIDHeader
		return nil
	}
}

// WithChift configures the Chift protocol: the key travels in
// X-Chift-Client-RequestId on POST and PATCH, and Chift's 409
// REQUEST_IN_PROCESS / REQUEST_ALREADY_PROCESSED answers drive the retries.
// Unless WithAttemptTimeout says otherwise, one attempt may take
// DefaultChiftAttemptTimeout: Chift itself retries a rate-limited connector
// for up to about 31 s, and an attempt cut shorter than that would only
// come back to REQUEST_IN_PROCESS.
func WithChift() Option {
	return func(c *config) error {
		c.header = textproto.CanonicalMIMEHeaderKey(ChiftRequestIDHeader)
		c.keyDeduplicates = true
		c.draftConflicts = false
		if !c.timeoutSet {
			c.attemptTimeout = DefaultChiftAttemptTimeout
		}
		return nil
	}
}

// WithZeroHashRequestID puts a UUIDv4 X-REQUEST-ID on every request, as
// zerohash asks. zerohash does not deduplicate transfers on it, so a POST
// is not retried once it may have reached the server: only failures that
// prove it was not processed (connection never made, 503 with
// "zh-allow-retry: true", 429) are retried. Transfers.Create adds the
// lookup-before-repost recipe on top.
func WithZeroHashRequestID() Option {
	return func(c *config) error {
		c.header = ZeroHashRequestIDHeader
		c.stampAll = true
		c.keyDeduplicates = false
		c.draftConflicts = false
		c.keyMustBeUUID = true
		c.rateLimitFirst = true
		return nil
	}
}

// WithStampedMethods sets the methods that get a generated key when the
// caller did not set one (default POST and PATCH).
func WithStampedMethods(methods ...string) Option {
	return func(c *config) error {
		if len(methods) == 0 {
			return errors.New("saferetry: WithStampedMethods: no method given")
		}
		set := make(map[string]bool, len(methods))
		for _, m := range methods {
			if m == "" || !validHeaderName(m) {
				return fmt.Errorf("saferetry: WithStampedMethods: %q is not a method", m)
			}
			set[strings.ToUpper(m)] = true
		}
		c.stampMethods, c.stampAll = set, false
		return nil
	}
}

// WithMaxRetries sets how many retries may follow the first attempt; 0
// disables retries.
func WithMaxRetries(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("saferetry: WithMaxRetries: %d is negative", n)
		}
		c.maxRetries = n
		return nil
	}
}

// WithBackoff sets the bounds of the jittered exponential wait between
// attempts.
func WithBackoff(initial, max time.Duration) Option {
	return func(c *config) error {
		if initial <= 0 || max <= 0 {
			return fmt.Errorf("saferetry: WithBackoff: initial %v and max %v must be positive", initial, max)
		}
		c.backoffInitial, c.backoffMax = initial, max
		return nil
	}
}

// WithAttemptTimeout bounds one attempt, up to the arrival of the response
// headers; reading the body of a successful attempt is not cut off. 0 means
// no bound beyond the request's context (the default).
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("saferetry: WithAttemptTimeout: %v is negative", d)
		}
		c.attemptTimeout, c.timeoutSet = d, true
		return nil
	}
}

// WithMaxRetryAfter caps how long a Retry-After header may make the
// transport wait (default 30s). A server asking for longer gets its response
// returned instead of a retry.
func WithMaxRetryAfter(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("saferetry: WithMaxRetryAfter: %v must be positive", d)
		}
		c.maxRetryAfter = d
		return nil
	}
}

// WithMaxBufferedBody sets how much of a request body without GetBody the
// transport buffers to be able to resend it (default 4 MiB). A larger body
// is sent once and never retried.
func WithMaxBufferedBody(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("saferetry: WithMaxBufferedBody: %d is negative", n)
		}
		c.maxBufferedBody = n
		return nil
	}
}

// WithLogger logs one line per attempt (key, method, URL without query
// secrets, status, wait). Headers and bodies are never logged. nil is
// silent, the default.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		c.logger = l
		return nil
	}
}

// WithObserver calls f after every attempt, from the goroutine that runs the
// request. f must not block.
func WithObserver(f func(Attempt)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("saferetry: WithObserver: nil func")
		}
		c.observer = f
		return nil
	}
}

// WithKeyGenerator replaces the UUIDv4 key generator, for keys with a
// prefix or from the application's own id scheme. Generated keys are
// validated like caller keys.
func WithKeyGenerator(f func() (string, error)) Option {
	return func(c *config) error {
		if f == nil {
			return errors.New("saferetry: WithKeyGenerator: nil func")
		}
		c.newKey = f
		return nil
	}
}

// WithHTTPClient makes NewClient wrap c (its timeout, jar, redirect policy
// and transport are kept; c itself is not modified).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error {
		if hc == nil {
			return errors.New("saferetry: WithHTTPClient: nil client")
		}
		c.httpClient = hc
		return nil
	}
}

// backOff is the configured jittered exponential schedule, for the loops
// above the transport (lookups, reposts, polls); limit 0 means no time
// limit beside the context.
func (c *config) backOff(limit time.Duration) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.backoffInitial),
		backoff.WithMaxInterval(c.backoffMax),
		backoff.WithMaxElapsedTime(limit),
	)
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, b) >= 0 {
			return false
		}
	}
	return true
}
