package saferetry_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

const invoicesPath = "consumers/" + consumer + "/invoicing/invoices"

func TestClientDoJSONCreatesOnce(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultUnavailable, saferetrytest.FaultDropBeforeProcessing)
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ID            string `json:"id"`
		InvoiceNumber string `json:"invoice_number"`
	}
	resp, err := client.DoJSON(context.Background(), "POST", invoicesPath, map[string]any{"invoice_number": "F-9"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	key := saferetry.KeyFromResponse(resp)
	if out.ID == "" || out.InvoiceNumber != "F-9" || srv.CreatedWithKey(key) != 1 || srv.Created() != 1 {
		t.Fatalf("out %+v, key %q created %d, total %d", out, key, srv.CreatedWithKey(key), srv.Created())
	}
	inv, ok := srv.Entity(out.ID)
	if !ok || inv.Key != key {
		t.Fatalf("entity %q: %+v, %v; want key %q", out.ID, inv, ok, key)
	}
}

func TestClientDoJSONErrors(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	client, err := saferetry.NewClient(srv.URL+"/", saferetry.WithChift())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("validation error with an array detail", func(t *testing.T) {
		_, err := client.DoJSON(context.Background(), "POST", invoicesPath, []int{1}, nil)
		var apiErr *saferetry.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 422 || len(apiErr.Details) == 0 || apiErr.Key == "" || apiErr.RequestID != "" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("deliberate key reuse is already processed", func(t *testing.T) {
		for i := range 2 {
			req, err := client.NewRequest(context.Background(), "POST", invoicesPath, map[string]any{"invoice_number": "F-R"})
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(saferetry.ChiftRequestIDHeader, "reused-key-1")
			_, err = client.Do(req, nil)
			if i == 0 && err != nil {
				t.Fatalf("first: %v", err)
			}
			if i == 1 && (!errors.Is(err, saferetry.ErrRequestAlreadyProcessed) || saferetry.KeyFromError(err) != "reused-key-1") {
				t.Fatalf("second: %v", err)
			}
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		_, err := client.DoJSON(context.Background(), "GET", "nope", nil, nil)
		var apiErr *saferetry.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "ERROR_RESOURCE_NOT_SUPPORTED" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unencodable body is refused before sending", func(t *testing.T) {
		before := len(srv.Requests())
		_, err := client.DoJSON(context.Background(), "POST", invoicesPath, map[string]any{"f": func() {}}, nil)
		if err == nil || !strings.Contains(err.Error(), "encoding request body") || len(srv.Requests()) != before {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestClientKeepsTheCallersHTTPClient(t *testing.T) {
	hit := false
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit = r.Header.Get("X-Via-Caller") == "yes"
		w.WriteHeader(http.StatusNoContent)
	}))
	defer api.Close()
	caller := &http.Client{Timeout: 5 * time.Second, Transport: headerTransport{api.Client().Transport}}
	client, err := saferetry.NewClient(api.URL, saferetry.WithHTTPClient(caller))
	if err != nil {
		t.Fatal(err)
	}
	if client.HTTPClient().Timeout != 0 || caller.Timeout != 5*time.Second || client.HTTPClient() == caller {
		t.Fatal("the wrapped client is not a copy of the caller's with the Timeout moved into the Transport")
	}
	if _, err := client.DoJSON(context.Background(), "POST", "x", map[string]int{"a": 1}, &struct{}{}); err != nil || !hit {
		t.Fatalf("err %v, request through the caller's transport: %v", err, hit)
	}
	if _, ok := caller.Transport.(headerTransport); !ok {
		t.Fatal("the caller's client was modified")
	}
}

type headerTransport struct{ base http.RoundTripper }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Via-Caller", "yes")
	return h.base.RoundTrip(r)
}

// A client offers only its API: every call of the other API's service is
// refused before anything is sent, with an error that says how to make the
// right client.
func TestClientRefusesTheOtherAPIsCalls(t *testing.T) {
	var sent atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	ctx := context.Background()
	chift, err := saferetry.NewClient(srv.URL, saferetry.WithChift())
	if err != nil {
		t.Fatal(err)
	}
	zh, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashRequestID())
	if err != nil {
		t.Fatal(err)
	}
	neither, err := saferetry.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	transfer := saferetry.TransferRequest{FromParticipantCode: "P", FromAccountGroup: "P", ToParticipantCode: "C", ToAccountGroup: "P", Asset: "USD", Amount: "1"}
	invoice := saferetry.ChiftCreate{Path: "consumers/c/invoicing/invoices", Body: map[string]any{}, ConsumerID: "c", ConnectionID: "k"}
	calls := []struct {
		name, want string
		call       func() error
	}{
		{"Transfers.Create on chift", "saferetry: Transfers.Create: this client was made for chift; zerohash calls need a client made with NewClient(zerohashURL, saferetry.WithZeroHashAuth(",
			func() error { _, err := chift.Transfers.Create(ctx, transfer); return err }},
		{"Transfers.List on chift", "saferetry: Transfers.List: this client was made for chift;",
			func() error { _, err := chift.Transfers.List(ctx, saferetry.ListTransfersOptions{}); return err }},
		{"Transfers.Get on chift", "saferetry: Transfers.Get: this client was made for chift;",
			func() error { _, err := chift.Transfers.Get(ctx, 1); return err }},
		{"Transfers.FindByClientTransferID on chift", "saferetry: Transfers.FindByClientTransferID: this client was made for chift;",
			func() error { _, err := chift.Transfers.FindByClientTransferID(ctx, "id"); return err }},
		{"Chift.Create on zerohash", "saferetry: Chift.Create: this client was made for zerohash; chift calls need a client made with NewClient(chiftURL, saferetry.WithChiftAuth(",
			func() error { _, err := zh.Chift.Create(ctx, invoice); return err }},
		{"Chift.LookupTransaction on zerohash", "saferetry: Chift.LookupTransaction: this client was made for zerohash;",
			func() error { _, err := zh.Chift.LookupTransaction(ctx, "c", "k", "id"); return err }},
		{"Chift.Create on neither", "saferetry: Chift.Create: this client was made for neither API",
			func() error { _, err := neither.Chift.Create(ctx, invoice); return err }},
		{"Transfers.Create on neither", "saferetry: Transfers.Create: this client was made for neither API",
			func() error { _, err := neither.Transfers.Create(ctx, transfer); return err }},
	}
	for _, c := range calls {
		if err := c.call(); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error starting %q", c.name, err, c.want)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d requests reached the server, want none", n)
	}
}

// An error that http.Client wraps names the URL once, and the key quoted;
// through Client.Do the URL's query values read REDACTED.
func TestErrorNamesTheURLOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // after the request was read: the outcome is unknown
		}
	}))
	defer srv.Close()
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/charges", strings.NewReader("{}"))
	req.Header.Set(saferetry.DefaultRequestIDHeader, "charge-7")
	_, err = hc.Do(req)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if n := strings.Count(msg, srv.URL); n != 1 || !strings.Contains(msg, `[key "charge-7"]`) || !errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Errorf("%q: the URL %d times, want once, with the key quoted and ErrOutcomeUnknown", msg, n)
	}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.DoJSON(context.Background(), http.MethodPost, "charges?token=secret", map[string]int{"amount": 1}, nil)
	if err == nil {
		t.Fatal("no error")
	}
	msg = err.Error()
	if strings.Count(msg, srv.URL+"/charges?token=REDACTED") != 1 || strings.Contains(msg, "secret") {
		t.Errorf("%q: want the redacted URL once, never the token", msg)
	}
}
