package saferetry_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
)

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// A zero Transport sends nothing: it answers with an error naming the
// constructors, and closes the request's body.
func TestZeroTransportSendsNothing(t *testing.T) {
	var tr saferetry.Transport
	body := &closeCounter{Reader: strings.NewReader("{}")}
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if resp != nil || err == nil || !strings.Contains(err.Error(), "not made by NewTransport or Wrap") {
		t.Fatalf("RoundTrip = %v, %v", resp, err)
	}
	if body.closed != 1 {
		t.Fatalf("body closed %d times, want 1", body.closed)
	}
	if errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatal("nothing was sent: the outcome is known")
	}
}

type idleCloser struct {
	http.RoundTripper
	closed int
}

func (c *idleCloser) CloseIdleConnections() { c.closed++ }

// http.Client.CloseIdleConnections reaches the base transport through a
// wrapped client; a base without the method, and the zero Transport, are
// left alone.
func TestCloseIdleConnectionsReachesTheBase(t *testing.T) {
	base := &idleCloser{RoundTripper: http.DefaultTransport}
	hc, err := saferetry.Wrap(&http.Client{Transport: base})
	if err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	if base.closed != 1 {
		t.Errorf("base closed its idle connections %d times, want 1", base.closed)
	}
	(&saferetry.Transport{}).CloseIdleConnections()
	tr, err := saferetry.NewTransport(rtOnly{})
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
}

type rtOnly struct{}

func (rtOnly) RoundTrip(*http.Request) (*http.Response, error) { return nil, http.ErrNotSupported }
