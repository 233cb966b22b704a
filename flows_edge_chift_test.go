package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Chift's creates take a JSON object; the fake answers anything else 422,
// which records the request id. Bodies of other Go types than the few
// Create refuses still encode to a JSON array, number, boolean or string.
func TestFlowEdgeChiftNonObjectBodyIsRefusedBeforeTheIDIsSpent(t *testing.T) {
	type invoiceBytes []byte
	s := "F-1"
	for _, tt := range []struct {
		name string
		body any
	}{
		{"a slice", []string{"F-1"}},
		{"a number", 42},
		{"a boolean", true},
		{"a pointer to a string", &s},
		{"a named byte slice (base64 string)", invoiceBytes(`{"invoice_number":"F-1"}`)},
		{"raw JSON string", json.RawMessage(`"F-1"`)},
		{"raw JSON array", json.RawMessage(`[{"invoice_number":"F-1"}]`)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t)
			_, err := r.create(context.Background(), "invoicing", "B-1", tt.body)
			if err == nil || !strings.Contains(err.Error(), "Body") {
				t.Errorf("err = %v; want a refusal naming Body", err)
			}
			if n := len(r.srv.Requests()); n != 0 {
				t.Errorf("%d requests sent (%v): request id B-1 is now spent", n, r.sequence())
			}
		})
	}
}

// A create resumed with FirstSentAt an hour ago, under a request id that
// Chift's log shows was processed thirty days ago (same route): that
// record cannot be this create's, whose first send was an hour ago.
func TestFlowEdgeChiftResumeDoesNotClaimARecordOlderThanFirstSentAt(t *testing.T) {
	var shift atomic.Int64
	shift.Store(int64(-30 * 24 * time.Hour))
	r := newFlowRig(t)
	r.srv.Now = func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
	ctx := context.Background()
	old, err := r.create(ctx, "invoicing", "R-1", invoice("OLD-1"))
	if err != nil {
		t.Fatal(err)
	}
	shift.Store(0)
	in := r.input("invoicing", "R-1", invoice("NEW-1"))
	in.FirstSentAt = time.Now().Add(-time.Hour)
	got, err := r.c.Chift.Create(ctx, in)
	if err == nil && got.EntityID == old.EntityID {
		inv, _ := r.srv.Entity(got.EntityID)
		t.Fatalf("Create returned %+v, the invoice %v created 30 days before FirstSentAt, as this create's", got, inv.Body["invoice_number"])
	}
}

// gatewayTransport forwards every request, except that POSTs after the
// first are answered by a gateway in front of Chift, which never passes
// them on.
type gatewayTransport struct {
	next   http.RoundTripper
	status int
	mu     sync.Mutex
	posts  int
}

func (g *gatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost {
		g.mu.Lock()
		g.posts++
		n := g.posts
		g.mu.Unlock()
		if n > 1 {
			if req.Body != nil {
				req.Body.Close()
			}
			return &http.Response{
				StatusCode: g.status, Status: http.StatusText(g.status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header:  http.Header{"Content-Type": {"text/html"}},
				Body:    io.NopCloser(strings.NewReader("<html><title>" + http.StatusText(g.status) + "</title></html>")),
				Request: req,
			}, nil
		}
	}
	return g.next.RoundTrip(req)
}

// The first post is processed and its answer lost; the repost is answered
// by a gateway's 4xx, which says nothing about the request id. The invoice
// exists: Create must not report a definite failure.
func TestFlowEdgeChiftGateway4xxOnRepostDoesNotHideTheCreate(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusBadRequest, http.StatusRequestEntityTooLarge} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := saferetrytest.NewChiftServer()
			t.Cleanup(srv.Close)
			base := &http.Transport{}
			t.Cleanup(base.CloseIdleConnections)
			gw := &gatewayTransport{next: base, status: status}
			c, err := NewClient(srv.URL, WithHTTPClient(&http.Client{Transport: gw}), WithChift(),
				WithBackoff(time.Millisecond, 5*time.Millisecond), WithMaxRetries(0))
			if err != nil {
				t.Fatal(err)
			}
			srv.Script(saferetrytest.FaultDropAfterProcessing)
			got, err := c.Chift.Create(context.Background(), ChiftCreate{Path: flowPath("invoicing"), Body: invoice("G-1"),
				ConsumerID: flowConsumer, ConnectionID: srv.ConnectionID, RequestID: "G-1"})
			if srv.CreatedWithKey("G-1") != 1 {
				t.Fatalf("setup: %d invoices under G-1", srv.CreatedWithKey("G-1"))
			}
			if err == nil && got.EntityID != "" {
				return // recovered
			}
			if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != "G-1" {
				t.Fatalf("err = %v (%T); the invoice exists: want ErrOutcomeUnknown with the key (or the entity)", err, err)
			}
		})
	}
}
