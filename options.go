package saferetry

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
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

// The ranges options accept: a value outside is a mistake (a timeout of 5
// meant as seconds is 5 ns), refused at construction.
const (
	MaxRetriesLimit      = 20
	MinWait              = time.Millisecond // shortest backoff, attempt timeout or Retry-After cap
	MaxWait              = 24 * time.Hour   // longest
	MaxBufferedBodyLimit = 1 << 30          // 1 GiB
)

func inRange(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }

// Option configures a Transport, Wrap or NewClient. An invalid value makes
// the constructor return an error that names the option.
type Option func(*config) error

type config struct {
	header          string // canonical, as net/http keys it
	headerShown     string // as the option or API document spells it, for messages
	stampAll        bool
	stampMethods    map[string]bool
	keyDeduplicates bool // the server dedups on the key: a keyed request is idempotent
	draftConflicts  bool // a bare 409 after an unknown outcome may be the IETF draft's "in progress": waited out
	keyMustBeUUID   bool
	rateLimitFirst  bool // zerohash: a 429, or a 503 with zh-allow-retry, means the request was not processed
	maxRetries      int
	backoffInitial  time.Duration
	backoffMax      time.Duration
	attemptTimeout  time.Duration
	maxRetryAfter   time.Duration
	maxBufferedBody int64
	logger          *slog.Logger
	observer        func(Attempt)
	hooks           Hooks
	newKey          func() (string, error)
	customKeys      bool // newKey is WithKeyGenerator's: its keys are validated
	httpClient      *http.Client
	signer          *zeroHashSigner
	apiOrigin       *url.URL
	clock           func() time.Time
	chiftCreds      *ChiftCredentials
	timeoutSet      bool // WithAttemptTimeout was given: presets keep their hands off
	budgetRatio     float64
	budgetPerSec    float64
	budgetOff       bool
	// callTimeout bounds one logical request, all attempts and the reading
	// of the response body: the Timeout of the http.Client that Wrap or
	// NewClient wrapped, moved here (see wrap).
	callTimeout time.Duration
	// protocols records the options that chose the key header and its
	// protocol, in order; more than one protocol is a contradiction.
	protocols []choice
	// dedupAsked: WithServerDeduplication was given.
	dedupAsked bool
	// stampedBy: WithStampedMethods was given.
	stampedBy bool
}

func defaultConfig() config {
	return config{
		header:          DefaultRequestIDHeader,
		headerShown:     DefaultRequestIDHeader,
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

// newConfig applies opts for the constructor named who ("NewTransport",
// "Wrap" or "NewClient"), then refuses combinations that contradict each
// other or that the constructor would ignore.
func newConfig(who string, opts []Option) (config, error) {
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
	errs = append(errs, cfg.contradictions(who)...)
	if cfg.dedupAsked && !cfg.keyMustBeUUID {
		cfg.keyDeduplicates = true
	}
	return cfg, errors.Join(errs...)
}

// contradictions lists the options that cannot hold together, or that the
// constructor who would silently ignore.
func (c *config) contradictions(who string) []error {
	var errs []error
	if names := conflicting(c.protocols); names != nil {
		errs = append(errs, fmt.Errorf("saferetry: %s contradict each other: each chooses the key header and how the server treats it; keep one", strings.Join(names, " and ")))
	}
	if c.stampAll && c.stampedBy {
		errs = append(errs, errors.New("saferetry: WithStampedMethods contradicts WithZeroHashRequestID, which puts a key on every request"))
	}
	if c.dedupAsked && c.keyMustBeUUID {
		errs = append(errs, errors.New("saferetry: WithServerDeduplication contradicts WithZeroHashRequestID: zerohash does not deduplicate on X-Request-Id"))
	}
	if c.httpClient != nil && who != "NewClient" {
		errs = append(errs, fmt.Errorf("saferetry: WithHTTPClient is for NewClient; %s would ignore it (and its Timeout): pass the client to Wrap, or its transport to NewTransport", who))
	}
	return errs
}

// choice: an option that chose a protocol (the header "X-Request-Id" of
// WithZeroHashRequestID, say; WithZeroHashAuth chooses the same one).
type choice struct{ protocol, option string }

// choose records that option picked the key header of protocol.
func (c *config) choose(protocol, option string) {
	c.protocols = append(c.protocols, choice{protocol, option})
}

// conflicting names the options, without repeats, when they chose more
// than one protocol; nil when they agree.
func conflicting(choices []choice) []string {
	var names []string
	agree := true
	for _, ch := range choices {
		agree = agree && ch.protocol == choices[0].protocol
		if !slices.Contains(names, ch.option) {
			names = append(names, ch.option)
		}
	}
	if agree {
		return nil
	}
	return names
}

// WithRequestIDHeader sets the header that carries the idempotency key
// (default "Idempotency-Key"). The name must be an RFC 9110 token as given
// (nothing is trimmed) and must not be a credential or framing header
// (Authorization, Cookie, Content-Length, zerohash's X-SCX-* ...): the key is
// logged and put in errors.
//
// Whether a keyed request is retried after it may have reached the server
// depends on whether the server deduplicates on the key. For the default
// header the SDK assumes the server follows the IETF Idempotency-Key draft
// (draft-ietf-httpapi-idempotency-key-header) and does; for any other name it
// assumes not, so such a request is retried only when the failure proves it
// was not processed. WithServerDeduplication states that the server does.
func WithRequestIDHeader(name string) Option {
	return func(c *config) error {
		if err := checkKeyHeaderName(name); err != nil {
			return fmt.Errorf("saferetry: WithRequestIDHeader: %w", err)
		}
		c.header, c.headerShown = textproto.CanonicalMIMEHeaderKey(name), name
		c.draftConflicts = c.header == DefaultRequestIDHeader
		c.keyDeduplicates = c.draftConflicts
		c.choose("header "+c.header, "WithRequestIDHeader")
		return nil
	}
}

// WithServerDeduplication states that the server processes a request at
// most once per key in the key header, as Stripe-style and IETF-draft
// servers do: a keyed request is then retried with the same key even after
// it may have reached the server. The default header and WithChift imply
// it; WithZeroHashRequestID refuses it (zerohash does not deduplicate on
// X-Request-Id).
func WithServerDeduplication() Option {
	return func(c *config) error {
		c.dedupAsked = true
		return nil
	}
}

// reservedHeaders may not carry the key: credentials would be logged as
// the key, and framing headers are net/http's to write.
var reservedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
	headerAPIKey, headerPassphrase, headerTimestamp, headerSigned, "X-Api-Key",
	"Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding",
	"Host", "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
	"Upgrade", "Expect",
}

// checkKeyHeaderName refuses a name that would change on the wire (net/http
// trims spaces and would refuse or rewrite other characters) or that is
// reserved.
func checkKeyHeaderName(name string) error {
	if name == "" || !validHeaderName(name) {
		return fmt.Errorf("%q is not a valid header name (RFC 9110 token characters only, nothing trimmed)", name)
	}
	canonical := textproto.CanonicalMIMEHeaderKey(name)
	for _, r := range reservedHeaders {
		if canonical == r {
			return fmt.Errorf("%q is a credential or framing header; the key is logged and must travel in a header of its own", name)
		}
	}
	return nil
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
		c.header, c.headerShown = textproto.CanonicalMIMEHeaderKey(ChiftRequestIDHeader), ChiftRequestIDHeader
		c.keyDeduplicates = true
		c.draftConflicts = false
		c.choose("chift", "WithChift")
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
		c.header, c.headerShown = ZeroHashRequestIDHeader, ZeroHashRequestIDHeader
		c.stampAll = true
		c.keyDeduplicates = false
		c.draftConflicts = false
		c.keyMustBeUUID = true
		c.rateLimitFirst = true
		c.choose("zerohash", "WithZeroHashRequestID")
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
		c.stampMethods, c.stampedBy = set, true
		return nil
	}
}

// WithMaxRetries sets how many retries may follow the first attempt, 0 to
// MaxRetriesLimit; 0 disables retries.
func WithMaxRetries(n int) Option {
	return func(c *config) error {
		if n < 0 || n > MaxRetriesLimit {
			return fmt.Errorf("saferetry: WithMaxRetries: %d is outside [0, %d]", n, MaxRetriesLimit)
		}
		c.maxRetries = n
		return nil
	}
}

// WithBackoff sets the bounds of the jittered exponential wait between
// attempts; both within [MinWait, MaxWait].
func WithBackoff(initial, max time.Duration) Option {
	return func(c *config) error {
		if !inRange(initial, MinWait, MaxWait) || !inRange(max, MinWait, MaxWait) {
			return fmt.Errorf("saferetry: WithBackoff: initial %v and max %v must be within [%v, %v]", initial, max, MinWait, MaxWait)
		}
		c.backoffInitial, c.backoffMax = initial, max
		return nil
	}
}

// WithAttemptTimeout bounds one attempt, up to the arrival of the response
// headers; reading the body of a successful attempt is not cut off. 0 means
// no bound beyond the request's context (the default); otherwise d must be
// within [MinWait, MaxWait].
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d != 0 && !inRange(d, MinWait, MaxWait) {
			return fmt.Errorf("saferetry: WithAttemptTimeout: %v is outside [%v, %v] (0 turns it off)", d, MinWait, MaxWait)
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
		if !inRange(d, MinWait, MaxWait) {
			return fmt.Errorf("saferetry: WithMaxRetryAfter: %v is outside [%v, %v]", d, MinWait, MaxWait)
		}
		c.maxRetryAfter = d
		return nil
	}
}

// WithMaxBufferedBody sets how many bytes of a request body without
// GetBody the transport buffers to be able to resend it: n in bytes, from 0
// (never buffer) to MaxBufferedBodyLimit (1 GiB); default 4 MiB. A larger
// body is sent once and never retried. Outside the range the option is
// refused with an error.
func WithMaxBufferedBody(n int64) Option {
	return func(c *config) error {
		if n < 0 || n > MaxBufferedBodyLimit {
			return fmt.Errorf("saferetry: WithMaxBufferedBody: %d is outside [0, %d] bytes", n, MaxBufferedBodyLimit)
		}
		c.maxBufferedBody = n
		return nil
	}
}

// WithLogger logs three kinds of records with log/slog (README "Logs"
// has the table):
//   - "saferetry attempt", one per attempt: at slog.LevelDebug when it got
//     an answer below 400, at slog.LevelWarn when it failed or got 400 or
//     more, retried or not. Attributes: method, url (query values
//     REDACTED), attempt (from 1), status (0 when no answer), sent (the
//     request may have reached the server), retry (another attempt
//     follows), wait (before it), and when present key (the idempotency
//     key) or request_id (zerohash's X-REQUEST-ID), reason (why a retry
//     was due: Attempt.Reason), budget_exhausted (the retry budget refused
//     it), code (Chift's error_code), error, replayed.
//   - "saferetry request failed", at Warn, when a logical request ends in
//     an error (the give-up): method, url, attempts, outcome_unknown,
//     key or request_id, budget_exhausted when true, error.
//   - "saferetry create", when Chift.Create or Transfers.Create returns:
//     api, key, outcome, posts, lookups, budget_exhausted when true, error
//     when any; at Debug when created, Info when recovered or reposted,
//     Warn when failed, Error when the outcome is unknown.
//
// Messages, levels and attribute names are part of the API; the error
// text is not. Headers and bodies are never logged, but an error's text
// carries a refused answer's message as APIError.Error writes it (at most
// 200 bytes of a body that is not JSON). nil is silent, the default.
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
		c.newKey, c.customKeys = f, true
		return nil
	}
}

// WithHTTPClient makes NewClient wrap c (its jar, redirect policy and
// transport are kept, its Timeout moves into the Transport as Wrap does; c
// itself is not modified). Only NewClient takes it: Wrap and NewTransport
// refuse it, as they would ignore it.
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
