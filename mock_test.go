package saferetry

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
)

const testURL = "http://api.test/v1/invoices"

// reply is one scripted answer of the mock API.
type reply struct {
	status int
	body   string
	header http.Header
	err    error // a transport error instead of a response
	sent   bool  // with err: the request was written before it failed
}

func answer(status int, body string) reply { return reply{status: status, body: body} }

func failure(err error, sent bool) reply { return reply{err: err, sent: sent} }

// mockAPI answers with a script, one reply per attempt, and records what
// each attempt carried.
type mockAPI struct {
	t       *testing.T
	header  string
	mu      sync.Mutex
	replies []reply
	keys    []string
	bodies  []string
	methods []string
}

// newMockAPI registers a responder for any method on testURL on an
// httpmock transport, the innermost transport of the tests.
func newMockAPI(t *testing.T, header string, replies ...reply) (*httpmock.MockTransport, *mockAPI) {
	t.Helper()
	m := &mockAPI{t: t, header: header, replies: replies}
	mt := httpmock.NewMockTransport()
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		mt.RegisterResponder(method, testURL, m.respond)
	}
	return mt, m
}

func (m *mockAPI) respond(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	m.mu.Lock()
	m.keys = append(m.keys, req.Header.Get(m.header))
	m.bodies = append(m.bodies, string(body))
	m.methods = append(m.methods, req.Method)
	if len(m.replies) == 0 {
		m.mu.Unlock()
		m.t.Errorf("attempt %d: no reply scripted", len(m.keys))
		return httpmock.NewStringResponse(599, "unscripted"), nil
	}
	r := m.replies[0]
	m.replies = m.replies[1:]
	m.mu.Unlock()
	return r.play(req)
}

// play answers req as the reply says, telling the transport's trace
// whether the request left: as net/http does, it asks for a connection,
// and gets one unless the failure came before any (a dial error).
func (r reply) play(req *http.Request) (*http.Response, error) {
	if r.err != nil {
		askConn(req)
		if !r.sent {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: r.err} // as net/http fails before a connection
		}
		wroteHeaders(req)
		return nil, r.err
	}
	wroteHeaders(req)
	resp := httpmock.NewStringResponse(r.status, r.body)
	for k, v := range r.header {
		resp.Header[k] = v
	}
	return resp, nil
}

// wroteHeaders tells the transport's trace what net/http reports for a
// request that left: a connection asked for and obtained, headers written.
func wroteHeaders(req *http.Request) {
	askConn(req)
	tr := httptrace.ContextClientTrace(req.Context())
	if tr == nil {
		return
	}
	if tr.GotConn != nil {
		tr.GotConn(httptrace.GotConnInfo{})
	}
	if tr.WroteHeaders != nil {
		tr.WroteHeaders()
	}
}

// askConn tells the trace that a connection was asked for, as net/http
// does before it dials or takes an idle one.
func askConn(req *http.Request) {
	if tr := httptrace.ContextClientTrace(req.Context()); tr != nil && tr.GetConn != nil {
		tr.GetConn(req.URL.Host)
	}
}

func (m *mockAPI) attempts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

func (m *mockAPI) seenKeys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.keys...)
}

func (m *mockAPI) seenBodies() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.bodies...)
}

// fastRetries keeps the tests' waits short.
var fastRetries = WithBackoff(time.Millisecond, 2*time.Millisecond)

func newTestTransport(t *testing.T, base http.RoundTripper, opts ...Option) *Transport {
	t.Helper()
	tr, err := NewTransport(base, append([]Option{fastRetries}, opts...)...)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	return tr
}

func newPost(t *testing.T, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, testURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// closeCounter counts reads and closes of a request body.
type closeCounter struct {
	io.Reader
	mu     sync.Mutex
	closes int
}

func (b *closeCounter) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closes++
	return nil
}

func (b *closeCounter) closeCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closes
}

var errConnReset = errors.New("connection reset by peer")

const (
	alreadyProcessedBody = `{"status":"error","message":"Request already processed: 200","detail":"Request with same client request id k was already successfully processed","error_code":"REQUEST_ALREADY_PROCESSED"}`
	inProcessBody        = `{"status":"error","message":"Request is in processing","detail":"Request with same client request id k is currently processed","error_code":"REQUEST_IN_PROCESS"}`
	invoiceNumberBody    = `{"message":"The invoice number is already used in the accounting system.","status":"error","error_code":"ERROR_INVOICE_NUMBER_ALREADY_USED"}`
)

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
