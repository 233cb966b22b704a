package saferetry_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

type resumeRT func(*http.Request) (*http.Response, error)

func (f resumeRT) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A resumed create (FirstSentAt set) whose first run Chift processed, met
// by failures that prove nothing about that run: Chift unreachable, or a
// proxy answering 404 to the post and the log alike. None is a definite
// failure: the invoice exists.
func TestChiftResumeNeverCallsAFailureDefinite(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	const consumer = "c0ffee00-0000-4000-8000-0000000000aa"
	in := saferetry.ChiftCreate{Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "R-1"},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "resumed-request-1"}
	direct, err := saferetry.NewClient(srv.URL, saferetry.WithChift())
	if err != nil {
		t.Fatal(err)
	}
	firstSent := time.Now().Add(-time.Minute)
	if _, err := direct.Chift.Create(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	in.FirstSentAt = firstSent
	for name, rt := range map[string]resumeRT{
		"connection refused": func(req *http.Request) (*http.Response, error) {
			req = req.Clone(req.Context())
			req.URL.Host = "127.0.0.1:1"
			return http.DefaultTransport.RoundTrip(req)
		},
		"proxy 404": func(req *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: http.StatusNotFound, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
		},
	} {
		c, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithHTTPClient(&http.Client{Transport: rt}),
			saferetry.WithAttemptTimeout(200*time.Millisecond), saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Chift.Create(context.Background(), in)
		if !errors.Is(err, saferetry.ErrOutcomeUnknown) || saferetry.KeyFromError(err) != in.RequestID {
			t.Errorf("%s: err = %v, want ErrOutcomeUnknown with the request id", name, err)
		}
	}
	// Reachable again: the resume recovers the invoice.
	got, err := direct.Chift.Create(context.Background(), in)
	if err != nil || !got.Recovered || got.EntityID == "" || srv.Created() != 1 {
		t.Fatalf("resumed against Chift: %+v, %v; %d invoices", got, err, srv.Created())
	}
}

// A resumed create whose first run never reached Chift, refused now by
// Chift's business check (the invoice number is taken): the log confirms
// the refusal, which stays definite.
func TestChiftResumeRefusedByChiftIsDefinite(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	const consumer = "c0ffee00-0000-4000-8000-0000000000bb"
	c, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	in := saferetry.ChiftCreate{Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "R-2"},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "other-request"}
	if _, err := c.Chift.Create(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	in.RequestID, in.FirstSentAt = "resumed-request-2", time.Now().Add(-time.Minute)
	_, err = c.Chift.Create(context.Background(), in)
	var spent *saferetry.ChiftRequestIDSpentError
	if !errors.As(err, &spent) || spent.OriginalStatus != http.StatusConflict || errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want a definite ChiftRequestIDSpentError of 409", err)
	}
	if srv.Created() != 1 {
		t.Fatalf("%d invoices, want 1", srv.Created())
	}
}
