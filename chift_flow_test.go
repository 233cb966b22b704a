package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The tests of Chift.Create's flow. They speak to
// saferetrytest.ChiftServer.

const flowConsumer = "c1"

func flowPath(kind string) string { return "consumers/" + flowConsumer + "/" + kind + "/invoices" }

// flowRig is a Chift fake and a client for it with short waits.
type flowRig struct {
	srv *saferetrytest.ChiftServer
	c   *Client
}

func newFlowRig(t *testing.T, opts ...Option) *flowRig {
	t.Helper()
	srv := saferetrytest.NewChiftServer()
	t.Cleanup(srv.Close)
	base := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(base.CloseIdleConnections)
	all := append([]Option{WithHTTPClient(&http.Client{Transport: base}), WithChift(),
		WithBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	c, err := NewClient(srv.URL, all...)
	if err != nil {
		t.Fatal(err)
	}
	return &flowRig{srv: srv, c: c}
}

// create runs Chift.Create on the invoices endpoint of kind ("invoicing" or
// "accounting").
func (r *flowRig) create(ctx context.Context, kind, id string, body any) (*ChiftCreated, error) {
	return r.c.Chift.Create(ctx, r.input(kind, id, body))
}

func (r *flowRig) input(kind, id string, body any) ChiftCreate {
	return ChiftCreate{Path: flowPath(kind), Body: body, ConsumerID: flowConsumer,
		ConnectionID: r.srv.ConnectionID, RequestID: id}
}

// sequence is the server's request log as "POST invoicing/invoices" (the
// path's last two segments) and "GET transactions" (a lookup).
func (r *flowRig) sequence() []string {
	var out []string
	for _, req := range r.srv.Requests() {
		parts := strings.Split(req.Path, "/")
		if parts[len(parts)-1] == "transactions" {
			parts = parts[len(parts)-1:]
		}
		out = append(out, req.Method+" "+strings.Join(parts[max(0, len(parts)-2):], "/"))
	}
	return out
}

func (r *flowRig) count(method string) int {
	n := 0
	for _, req := range r.srv.Requests() {
		if req.Method == method {
			n++
		}
	}
	return n
}

func invoice(number string) map[string]any {
	return map[string]any{"invoice_number": number, "total": 121}
}

// Kind 5: input Chift would refuse is refused before anything is sent, so
// the request id stays unused; pre-encoded JSON goes as it is.
func TestChiftCreateRefusesBadInputBeforeSpendingTheID(t *testing.T) {
	ctx := context.Background()
	r := newFlowRig(t)
	var nilInvoice *struct{ N string }
	for _, tt := range []struct {
		name  string
		in    ChiftCreate
		field string
	}{
		{"nil body", r.input("invoicing", "F-9", nil), "Body"},
		{"string body", r.input("invoicing", "F-9", `{"invoice_number":"F-9"}`), "Body"},
		{"bytes that are not JSON", r.input("invoicing", "F-9", []byte(`invoice_number=F-9`)), "Body"},
		{"raw message that is not JSON", r.input("invoicing", "F-9", json.RawMessage(`{"invoice_number":`)), "Body"},
		{"a nil pointer, JSON null", r.input("invoicing", "F-9", nilInvoice), "Body"},
		{"a reader", r.input("invoicing", "F-9", strings.NewReader(`{"invoice_number":"F-9"}`)), "Body"},
		{"first sent in the future", func() ChiftCreate {
			in := r.input("invoicing", "F-9", invoice("F-9"))
			in.FirstSentAt = time.Now().Add(time.Hour)
			return in
		}(), "FirstSentAt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.srv.Requests())
			_, err := r.c.Chift.Create(ctx, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.field) || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v; want a refusal naming %s", err, tt.field)
			}
			if n := len(r.srv.Requests()) - before; n != 0 {
				t.Fatalf("%d requests sent: %v", n, r.sequence())
			}
		})
	}
	for i, body := range []any{[]byte(`{"invoice_number":"F-9"}`), json.RawMessage(` {"invoice_number":"F-10"} `)} {
		id := []string{"F-9", "F-10"}[i]
		got, err := r.create(ctx, "invoicing", id, body)
		if err != nil || got.Recovered {
			t.Fatalf("pre-encoded %T: %+v, %v", body, got, err)
		}
		if inv, ok := r.srv.Entity(got.EntityID); !ok || inv.Body["invoice_number"] != id || inv.Key != id {
			t.Fatalf("pre-encoded %T: entity %+v", body, inv)
		}
	}
}
