package saferetry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

func newAuthServer() *saferetrytest.ChiftServer {
	srv := saferetrytest.NewChiftServer()
	srv.RequireAuth = true
	return srv
}

func creds(srv *saferetrytest.ChiftServer) saferetry.ChiftCredentials {
	return saferetry.ChiftCredentials{ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, AccountID: srv.AccountID}
}

func chiftAPI(t *testing.T, srv *saferetrytest.ChiftServer, opts ...saferetry.Option) (*saferetry.Client, *headerTap) {
	t.Helper()
	tap := newHeaderTap("Authorization")
	base := []saferetry.Option{
		saferetry.WithHTTPClient(&http.Client{Transport: tap}),
		saferetry.WithChiftAuth(creds(srv)),
		saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
	}
	c, err := saferetry.NewClient(srv.URL, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c, tap
}

func createInvoice(c *saferetry.Client, srv *saferetrytest.ChiftServer, number, requestID string) (*saferetry.ChiftCreated, error) {
	return c.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path:       "consumers/" + consumer + "/invoicing/invoices",
		Body:       map[string]any{"invoice_number": number, "total": 121},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: requestID,
	})
}

func TestChiftTokenFetchedOnceForConcurrentRequests(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = createInvoice(c, srv, fmt.Sprintf("T-%02d", i), "")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create %d: %v", i, err)
		}
	}
	if srv.TokensIssued() != 1 || srv.Created() != 50 {
		t.Fatalf("tokens issued %d (want 1), invoices %d (want 50)", srv.TokensIssued(), srv.Created())
	}
}

func TestChiftTokenRefreshedBeforeExpiry(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	// The SDK replaces a token a minute before it expires: with a 61 s
	// lifetime, the token is due for replacement after one second.
	srv.TokenLifetime = 61 * time.Second
	c, tap := chiftAPI(t, srv)
	start := time.Now() // the token is fetched after this, so it is due after start+1s
	if _, err := createInvoice(c, srv, "R-1", ""); err != nil {
		t.Fatal(err)
	}
	_, err := createInvoice(c, srv, "R-2", "")
	if err != nil {
		t.Fatalf("second create: %v", err)
	}
	if took := time.Since(start); took < time.Second && srv.TokensIssued() != 1 {
		t.Fatalf("tokens issued %d within %v; want the cached one", srv.TokensIssued(), took)
	} else if took >= time.Second {
		t.Logf("the first two creates took %v, past the token's first second: caching not checked", took)
	}
	time.Sleep(1100 * time.Millisecond) // past R-2, so surely past the token's first second
	issued := srv.TokensIssued()
	if _, err := createInvoice(c, srv, "R-3", ""); err != nil {
		t.Fatal(err)
	}
	if srv.TokensIssued() != issued+1 || len(tap.tokens()) != issued+1 {
		t.Fatalf("tokens issued %d, sent %d; want a new one before the old expired", srv.TokensIssued(), len(tap.seen()))
	}
	for _, r := range srv.Requests() {
		if r.Status == http.StatusUnauthorized {
			t.Fatalf("a request was refused: %+v", r)
		}
	}
}

func TestChiftOneRetryAfter401(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	if _, err := createInvoice(c, srv, "U-1", ""); err != nil {
		t.Fatal(err)
	}
	srv.ExpireTokens()
	got, err := createInvoice(c, srv, "U-2", "")
	if err != nil || got.EntityID == "" || got.Recovered {
		t.Fatalf("after a 401: %+v, %v", got, err)
	}
	if srv.TokensIssued() != 2 {
		t.Fatalf("tokens issued %d, want 2", srv.TokensIssued())
	}
	unauthorized := 0
	for _, r := range srv.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if unauthorized != 1 {
		t.Fatalf("%d requests refused, want exactly the one that led to the refresh", unauthorized)
	}
}

func TestChiftWrongCredentialsFailFast(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	bad := creds(srv)
	bad.ClientSecret = "wrong-secret-value-123"
	var logs bytes.Buffer
	c, err := saferetry.NewClient(srv.URL, saferetry.WithChiftAuth(bad), saferetry.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	_, err = createInvoice(c, srv, "W-1", "")
	var apiErr *saferetry.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "ERROR_CHIFT_AUTHENTICATION_ERROR" {
		t.Fatalf("err = %v", err)
	}
	if len(srv.Requests()) != 1 || srv.Created() != 0 {
		t.Fatalf("%d requests (want only the token request), %d created", len(srv.Requests()), srv.Created())
	}
	for _, text := range []string{err.Error(), logs.String(), fmt.Sprintf("%v %+v %#v", bad, bad, bad)} {
		if strings.Contains(text, bad.ClientSecret) {
			t.Fatalf("the client secret leaks: %s", text)
		}
	}
}

// TestChiftSecretsAbsentFromLogsAndErrors runs token fetches, a refresh
// after a 401, recoveries and failures with a debug logger, then searches
// every log line and error for the secret and every token sent.
func TestChiftSecretsAbsentFromLogsAndErrors(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	var logs bytes.Buffer
	c, tap := chiftAPI(t, srv, saferetry.WithLogger(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	var errs []string
	record := func(_ *saferetry.ChiftCreated, err error) {
		if err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v", err))
		}
	}
	record(createInvoice(c, srv, "S-1", ""))
	srv.ExpireTokens()
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	record(createInvoice(c, srv, "S-2", ""))
	srv.Script(saferetrytest.FaultBadGateway)
	record(createInvoice(c, srv, "S-3", ""))
	record(createInvoice(c, srv, "S-3", "")) // business conflict: invoice number used
	_, err := c.Chift.LookupTransaction(context.Background(), consumer, srv.ConnectionID, "no-such-request")
	errs = append(errs, err.Error())

	secrets := append(tap.tokens(), srv.ClientSecret)
	if len(secrets) < 3 {
		t.Fatalf("only %d secrets to look for", len(secrets))
	}
	if logs.Len() == 0 || len(errs) < 2 {
		t.Fatalf("nothing to search: %d bytes of log, %d errors", logs.Len(), len(errs))
	}
	wantNoSecrets(t, logs.String(), errs, secrets)
}

func TestChiftLookupTransaction(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	created, err := createInvoice(c, srv, "L-1", "lookup-found")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("found", func(t *testing.T) {
		tx, err := c.Chift.LookupTransaction(context.Background(), consumer, srv.ConnectionID, "lookup-found")
		if err != nil || tx.StatusCode != 200 || tx.CreatedEntityID != created.EntityID || tx.Method != "POST" ||
			!strings.HasSuffix(tx.Route, "/invoicing/invoices") || tx.CreatedOn.IsZero() || tx.InProcess() {
			t.Fatalf("got %+v, %v", tx, err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		_, err := c.Chift.LookupTransaction(context.Background(), consumer, srv.ConnectionID, "lookup-missing")
		var apiErr *saferetry.APIError
		if !errors.Is(err, saferetry.ErrTransactionNotFound) || !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("in process", func(t *testing.T) {
		srv.SlowDelay = time.Hour // until the lookup below has seen it
		srv.Script(saferetrytest.FaultSlowCommit)
		done := make(chan error, 1)
		go func() {
			_, err := createInvoice(c, srv, "L-2", "lookup-slow")
			done <- err
		}()
		var tx *saferetry.Transaction
		waitUntil(t, "the request in the log", func() bool {
			tx, err = c.Chift.LookupTransaction(context.Background(), consumer, srv.ConnectionID, "lookup-slow")
			return err == nil
		})
		srv.ReleaseSlowCommits()
		if tx == nil || !tx.InProcess() || tx.CreatedEntityID != "" {
			t.Fatalf("during the slow commit: %+v, %v", tx, err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad input refused before sending", func(t *testing.T) {
		before := len(srv.Requests())
		for _, args := range [][3]string{{"", srv.ConnectionID, "k"}, {consumer, "a/b", "k"}, {consumer, srv.ConnectionID, "bad\nkey"}} {
			if _, err := c.Chift.LookupTransaction(context.Background(), args[0], args[1], args[2]); err == nil {
				t.Errorf("%q accepted", args)
			}
		}
		if len(srv.Requests()) != before {
			t.Fatal("bad input was sent")
		}
	})
}

func TestChiftCreateRecovers(t *testing.T) {
	tests := []struct {
		name   string
		fault  saferetrytest.Fault
		reuse  bool
		opts   []saferetry.Option
		status int
	}{
		{"dropped after processing", saferetrytest.FaultDropAfterProcessing, false, nil, 200},
		{"body cut off", saferetrytest.FaultResetMidBody, false, nil, 200},
		// The first attempt times out on the held key, the retry hears
		// REQUEST_IN_PROCESS, and the log is read while the key is held.
		{"still in process when the retries ran out", saferetrytest.FaultSlowCommit, false,
			[]saferetry.Option{saferetry.WithAttemptTimeout(promptTimeout), saferetry.WithMaxRetries(1)}, 200},
		{"request id reused on purpose", saferetrytest.FaultNone, true, nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAuthServer()
			defer srv.Close()
			srv.SlowDelay = time.Hour // until a lookup has been answered
			releaseOnLookup := saferetry.WithObserver(func(a saferetry.Attempt) {
				if a.Method == http.MethodGet {
					srv.ReleaseSlowCommits()
				}
			})
			c, _ := chiftAPI(t, srv, append([]saferetry.Option{releaseOnLookup}, tt.opts...)...)
			id := "recover-" + strings.ReplaceAll(tt.name, " ", "-")
			var first *saferetry.ChiftCreated
			if tt.reuse {
				var err error
				if first, err = createInvoice(c, srv, "C-1", id); err != nil || first.Recovered {
					t.Fatalf("first: %+v, %v", first, err)
				}
			} else {
				srv.Script(tt.fault)
			}
			got, err := createInvoice(c, srv, "C-1", id)
			if err != nil || !got.Recovered || got.StatusCode != tt.status || got.RequestID != id {
				t.Fatalf("got %+v, %v", got, err)
			}
			inv, ok := srv.Entity(got.EntityID)
			if !ok || inv.Key != id || srv.CreatedWithKey(id) != 1 {
				t.Fatalf("entity %q: %+v %v, created %d", got.EntityID, inv, ok, srv.CreatedWithKey(id))
			}
			if first != nil && first.EntityID != got.EntityID {
				t.Fatalf("reuse recovered %q, first created %q", got.EntityID, first.EntityID)
			}
		})
	}
}

func TestChiftCreateFailures(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	t.Run("validation error with an array detail", func(t *testing.T) {
		// Chift.Create refuses a body that is not an object before sending
		// it; the plain client shows Chift's 422.
		_, err := c.DoJSON(context.Background(), http.MethodPost, "consumers/"+consumer+"/invoicing/invoices",
			[]string{"not", "an", "object"}, nil)
		var apiErr *saferetry.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 422 || len(apiErr.Details) == 0 || apiErr.Details[0].Msg == "" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("recovered status that was not a success", func(t *testing.T) {
		if _, err := createInvoice(c, srv, "DUP-1", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := createInvoice(c, srv, "DUP-1", "conflict-key"); err == nil {
			t.Fatal("business conflict accepted")
		}
		_, err := createInvoice(c, srv, "DUP-1", "conflict-key")
		var apiErr *saferetry.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 409 || apiErr.Key != "conflict-key" {
			t.Fatalf("err = %v; want the original 409 read from the log", err)
		}
	})
	t.Run("outcome cannot be learned", func(t *testing.T) {
		srv.Script(saferetrytest.FaultDropAfterProcessing)
		const failedLookups = 3
		srv.ScriptLookup(slices.Repeat([]saferetrytest.Fault{saferetrytest.FaultInternalError}, failedLookups)...)
		// The caller gives up after the third failed lookup, whatever the
		// time that took.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var failed atomic.Int32
		c, _ := chiftAPI(t, srv, saferetry.WithObserver(func(a saferetry.Attempt) {
			if a.Method == http.MethodGet && a.StatusCode == http.StatusInternalServerError && failed.Add(1) == failedLookups {
				cancel()
			}
		}))
		_, err := c.Chift.Create(ctx, saferetry.ChiftCreate{
			Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "LOST-1"},
			ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "unknown-outcome-1",
		})
		if !errors.Is(err, saferetry.ErrOutcomeUnknown) || saferetry.KeyFromError(err) != "unknown-outcome-1" || failed.Load() != failedLookups {
			t.Fatalf("err = %v after %d failed lookups", err, failed.Load())
		}
	})
	t.Run("bad input refused before sending", func(t *testing.T) {
		before := len(srv.Requests())
		for _, in := range []saferetry.ChiftCreate{
			{Path: "", ConsumerID: consumer, ConnectionID: srv.ConnectionID},
			{Path: "x", ConsumerID: "", ConnectionID: srv.ConnectionID},
			{Path: "x", ConsumerID: consumer, ConnectionID: ""},
			{Path: "x", ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: strings.Repeat("k", 256)},
		} {
			if _, err := c.Chift.Create(context.Background(), in); err == nil {
				t.Errorf("%+v accepted", in)
			}
		}
		if len(srv.Requests()) != before {
			t.Fatal("bad input was sent")
		}
	})
}

func TestChiftCreatePostsAgainAfterServerErrors(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	srv.Script(saferetrytest.FaultInternalError, saferetrytest.FaultInternalError)
	got, err := createInvoice(c, srv, "E-1", "post-again-1")
	if err != nil || got.Recovered || got.EntityID == "" {
		t.Fatalf("got %+v, %v", got, err)
	}
	posts := 0
	for _, r := range srv.Requests() {
		if r.Method == "POST" && r.Key == "post-again-1" {
			posts++
		}
	}
	if posts != 3 || srv.CreatedWithKey("post-again-1") != 1 {
		t.Fatalf("%d posts, %d created; want 3 posts with one key and one invoice", posts, srv.CreatedWithKey("post-again-1"))
	}
	srv.Script(saferetrytest.FaultInternalError, saferetrytest.FaultInternalError, saferetrytest.FaultInternalError)
	_, err = createInvoice(c, srv, "E-2", "post-again-2")
	var apiErr *saferetry.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || srv.CreatedWithKey("post-again-2") != 0 {
		t.Fatalf("after 3 server errors: %v", err)
	}
}

func TestChiftCreateRefusesAResumeBeyondRetention(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	c, _ := chiftAPI(t, srv)
	_, err := c.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"total": 1},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "old-request",
		FirstSentAt: time.Now().Add(-180 * 24 * time.Hour),
	})
	if !errors.Is(err, saferetry.ErrOutcomeUnknown) || !errors.Is(err, saferetry.ErrKeyExpired) || saferetry.KeyFromError(err) != "old-request" || !strings.Contains(err.Error(), "6 months") {
		t.Fatalf("err = %v", err)
	}
	if len(srv.Requests()) != 0 {
		t.Fatalf("%d requests sent", len(srv.Requests()))
	}
}

func TestChiftTokenEndpointFailureIsRetried(t *testing.T) {
	srv := newAuthServer()
	defer srv.Close()
	srv.ScriptToken(saferetrytest.FaultInternalError, saferetrytest.FaultDropBeforeProcessing)
	c, _ := chiftAPI(t, srv)
	got, err := createInvoice(c, srv, "TK-1", "")
	if err != nil || got.EntityID == "" {
		t.Fatalf("got %+v, %v", got, err)
	}
	if srv.TokensIssued() != 1 || srv.Created() != 1 {
		t.Fatalf("tokens issued %d, created %d", srv.TokensIssued(), srv.Created())
	}
}
