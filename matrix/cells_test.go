package matrix

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// The dimensions of the matrix. A cell is one value of each.

type protocol int

const (
	http1    protocol = iota
	http2TLS          // HTTP/2 over TLS, ALPN h2
	h2c               // HTTP/2 over cleartext, prior knowledge
)

type bound int

const (
	unbounded      bound = iota
	clientTimeout        // http.Client.Timeout on the client given to Wrap
	ctxDeadline          // a deadline on the request's context
	attemptTimeout       // saferetry.WithAttemptTimeout
)

type bodyKind int

const (
	withGetBody bodyKind = iota // in memory, GetBody set
	streamSmall                 // no GetBody, under WithMaxBufferedBody
	streamLarge                 // no GetBody, over WithMaxBufferedBody
	noBody                      // a POST with a nil body
)

type auth int

const (
	idempotencyKey  auth = iota // no auth: the default Idempotency-Key, deduplicated by the server
	chiftToken                  // WithChiftAuth: X-Chift-Client-RequestId, deduplicated with 409s
	zeroHashSigning             // WithZeroHashAuth: X-Request-Id, which the server does not deduplicate
)

type baseKind int

const (
	netHTTP baseKind = iota // net/http's *http.Transport
	noTrace                 // a RoundTripper that hides httptrace from the SDK
)

var (
	protocolNames = [...]string{http1: "h1", http2TLS: "h2", h2c: "h2c"}
	boundNames    = [...]string{unbounded: "unbounded", clientTimeout: "client-timeout", ctxDeadline: "ctx-deadline", attemptTimeout: "attempt-timeout"}
	bodyNames     = [...]string{withGetBody: "getbody", streamSmall: "stream-small", streamLarge: "stream-large", noBody: "nobody"}
	authNames     = [...]string{idempotencyKey: "idempotency-key", chiftToken: "chift", zeroHashSigning: "zerohash"}
	baseNames     = [...]string{netHTTP: "nethttp", noTrace: "notrace"}
)

type cell struct {
	proto protocol
	bound bound
	body  bodyKind
	auth  auth
	base  baseKind
}

// String is the cell's name, also its subtest name: -run
// 'TestMatrix/h2/.*/stream-large' selects by any dimension.
func (c cell) String() string {
	return strings.Join([]string{protocolNames[c.proto], boundNames[c.bound], bodyNames[c.body], authNames[c.auth], baseNames[c.base]}, "/")
}

func allCells() []cell {
	var cells []cell
	for p := range len(protocolNames) {
		for b := range len(boundNames) {
			for k := range len(bodyNames) {
				for a := range len(authNames) {
					for s := range len(baseNames) {
						cells = append(cells, cell{protocol(p), bound(b), bodyKind(k), auth(a), baseKind(s)})
					}
				}
			}
		}
	}
	return cells
}

// Timing. Checks never depend on how fast the machine is: a bound that
// fires early only turns successes into errors, which are checked too. The
// slow answer is five times the bound so that it always passes it.
const (
	boundTimeout = 400 * time.Millisecond
	slowHold     = 2 * time.Second  // released at once when the cell ends
	watchdog     = 60 * time.Second // with no call returning in a cell: it is stuck
)

// Body sizes: the streamed bodies sit on either side of the buffer limit.
const (
	maxBuffered = 2048
	smallBody   = 512
	largeBody   = 8192
)

// faults are the kinds a cell's server draws from. A slow answer needs a
// bound to pass; 401s only mean something to Chift's token auth; the
// frame-level faults need HTTP/2.
func (c cell) faults() []fault {
	fs := []fault{dropBefore, dropAfter, status500, status502, status503, status429}
	if c.bound != unbounded {
		fs = append(fs, slowAnswer)
	}
	if c.auth == chiftToken {
		fs = append(fs, status401)
	}
	if c.proto != http1 {
		fs = append(fs, rstProtocolBefore, rstProtocolAfter, rstInternalBefore, rstInternalAfter,
			rstCancelBefore, rstCancelAfter, rstRefused, goAwayBelow, goAwayAt)
	}
	return fs
}

// client builds what a service would: an http.Client over the protocol's
// transport (behind the trace-hiding wrapper if the cell says so), with the
// cell's timeout, wrapped by saferetry with the cell's options.
func (c cell) client(srv *server, creds credentials) (*http.Client, error) {
	var rt http.RoundTripper = srv.transport
	if c.base == noTrace {
		rt = traceless{inner: srv.transport}
	}
	hc := &http.Client{Transport: rt}
	if c.bound == clientTimeout {
		hc.Timeout = boundTimeout
	}
	opts := []saferetry.Option{
		saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		saferetry.WithMaxRetries(5),
		saferetry.WithMaxBufferedBody(maxBuffered),
	}
	switch c.auth {
	case chiftToken:
		opts = append(opts, saferetry.WithChiftAuth(creds.chift), saferetry.WithAPIBaseURL(srv.url))
	case zeroHashSigning:
		opts = append(opts, saferetry.WithZeroHashAuth(creds.zhKey, creds.zhSecret, creds.zhPassphrase), saferetry.WithAPIBaseURL(srv.url))
	}
	if c.bound == attemptTimeout {
		opts = append(opts, saferetry.WithAttemptTimeout(boundTimeout))
	}
	wrapped, err := saferetry.Wrap(hc, opts...)
	if err != nil {
		return nil, fmt.Errorf("saferetry.Wrap: %w", err)
	}
	return wrapped, nil
}
