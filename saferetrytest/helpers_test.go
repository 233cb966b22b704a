package saferetrytest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Helpers shared by the tests of ChiftServer and ZeroHashServer.

// outcome is what a client saw of one request.
type outcome struct {
	status int // 0 when no response arrived
	header http.Header
	body   []byte
	err    error // from the round trip or from reading the body
}

// rawClient never reuses a connection, so net/http has no reason to replay a
// request and every fault reaches the test as the server made it. Its
// timeout only guards against a hang.
func rawClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: hangGuard}
}

func send(t *testing.T, c *http.Client, method, url string, header http.Header, body string) outcome {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	return roundTrip(c, req)
}

// roundTrip sends req and reads the whole answer.
func roundTrip(c *http.Client, req *http.Request) outcome {
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	out := outcome{status: resp.StatusCode, header: resp.Header}
	out.body, out.err = io.ReadAll(resp.Body)
	return out
}

func decode(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	return m
}

func wantStatus(t *testing.T, o outcome, status int) {
	t.Helper()
	if o.err != nil || o.status != status {
		t.Fatalf("got status %d, err %v, body %s; want %d", o.status, o.err, o.body, status)
	}
}

func wantBodyText(t *testing.T, o outcome, body string) {
	t.Helper()
	if string(o.body) != body {
		t.Errorf("body =\n%s\nwant\n%s", o.body, body)
	}
}

func wantBody(t *testing.T, o outcome, status int, body string) {
	t.Helper()
	wantStatus(t, o, status)
	wantBodyText(t, o, body)
}

// wantResult checks the status, 0 for no response, and whether the round
// trip or the body read failed.
func wantResult(t *testing.T, o outcome, status int, wantErr bool) {
	t.Helper()
	if o.status != status || (o.err != nil) != wantErr {
		t.Fatalf("got status %d, err %v; want %d, error %v", o.status, o.err, status, wantErr)
	}
}

func wantRecords(t *testing.T, got []saferetrytest.RequestRecord, want ...saferetrytest.RequestRecord) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Requests() =\n%+v\nwant\n%+v", got, want)
	}
}

// wantFaults compares the fault recorded on each request with want.
func wantFaults(t *testing.T, got []saferetrytest.RequestRecord, want ...saferetrytest.Fault) {
	t.Helper()
	var faults []saferetrytest.Fault
	for _, r := range got {
		faults = append(faults, r.Fault)
	}
	if !reflect.DeepEqual(faults, want) {
		t.Errorf("recorded faults %v, want %v", faults, want)
	}
}

func checkCutBody(t *testing.T, o outcome) {
	t.Helper()
	if !errors.Is(o.err, io.ErrUnexpectedEOF) {
		t.Errorf("body read error %v, want io.ErrUnexpectedEOF", o.err)
	}
	if len(o.body) == 0 || json.Valid(o.body) {
		t.Errorf("body %q should be a non-empty prefix of JSON", o.body)
	}
}

func checkProxyPage(title string) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if ct := o.header.Get("Content-Type"); ct != "text/html" {
			t.Errorf("Content-Type = %q, want text/html", ct)
		}
		if !strings.Contains(string(o.body), "<title>"+title+"</title>") {
			t.Errorf("body %q lacks title %q", o.body, title)
		}
	}
}

// hangGuard bounds waits that end at once unless something is broken; it
// is long, so that a loaded machine does not fail them.
const hangGuard = 30 * time.Second

// waitFor polls for a state the server reaches on another goroutine, such
// as a slow commit holding its key.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// wantReturns fails the test when f, named what, has not returned within
// hangGuard.
func wantReturns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal(what + " hangs")
	}
}

// testClock is a server clock that only tests move.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// faultCalls records the calls of a fault func as "id#attempt".
type faultCalls struct {
	mu    sync.Mutex
	calls []string
}

func (l *faultCalls) add(id string, attempt int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf("%s#%d", id, attempt))
}

func (l *faultCalls) want(t *testing.T, want ...string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !reflect.DeepEqual(l.calls, want) {
		t.Errorf("fault func calls %v, want %v", l.calls, want)
	}
}
