package saferetryablehttp_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The proof that stacking is wrong: the server creates the invoice and the
// connection drops before the answer. The Transport retries with the same
// key and hears REQUEST_ALREADY_PROCESSED, an error, which retryablehttp's
// DefaultRetryPolicy retries as a new request: a new key, a second invoice.
func TestNaiveStackCreatesTwice(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	rc := naive(t, saferetry.WithChift())

	resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
	if err != nil {
		t.Fatalf("the naive stack reports an error (%v); the proof expects it to report success after creating twice", err)
	}
	closeResp(resp)
	if got := srv.Created(); got != 2 {
		t.Fatalf("invoices created for one logical POST: %d, want 2", got)
	}
	keys := keysOf(srv.Requests())
	if len(keys) != 3 || keys[0] != keys[1] || keys[2] == keys[0] {
		t.Fatalf("keys sent: %q, want the first key twice (the Transport's attempt and retry), then another (retryablehttp's retry)", keys)
	}
	for _, k := range []string{keys[0], keys[2]} {
		if n := srv.CreatedWithKey(k); n != 1 {
			t.Errorf("invoices under key %s: %d, want 1", k, n)
		}
	}
}

// With an invoice number the fake refuses the second invoice, and the
// naive stack hands its caller a business conflict for the invoice its own
// first try created.
func TestNaiveStackAnswersItsOwnInvoiceWithAConflict(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	rc := naive(t, saferetry.WithChift())

	resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(`{"invoice_number":"F-1","total":121}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var apiErr *saferetry.APIError
	if !errors.As(saferetry.CheckResponse(resp), &apiErr) || apiErr.Code != "ERROR_INVOICE_NUMBER_ALREADY_USED" {
		t.Fatalf("answer %d %v, want 409 ERROR_INVOICE_NUMBER_ALREADY_USED", resp.StatusCode, apiErr)
	}
	if got, keys := srv.Created(), keysOf(srv.Requests()); got != 1 || len(keys) != 3 || distinct(keys) != 2 {
		t.Fatalf("invoices created: %d, keys sent: %q; want 1 invoice, 3 requests under 2 keys", got, keys)
	}
}

// The same fault under Configure: one invoice, one key, and the
// Transport's typed answer instead of a second create.
func TestConfigureLostAnswerCreatesOnce(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	rc := configured(t, saferetry.WithChift())

	resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
	closeResp(resp)
	if resp != nil || !errors.Is(err, saferetry.ErrRequestAlreadyProcessed) {
		t.Fatalf("got response %v and error %v, want no response and an error matching ErrRequestAlreadyProcessed", resp, err)
	}
	var apiErr *saferetry.APIError
	if !errors.As(err, &apiErr) || apiErr.OriginalStatus != http.StatusOK {
		t.Errorf("error %v: want an *APIError with OriginalStatus 200", err)
	}
	if strings.Contains(err.Error(), "giving up") {
		t.Errorf("error %q comes from retryablehttp's wrapper, not the Transport", err)
	}
	keys := keysOf(srv.Requests())
	if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" {
		t.Fatalf("keys sent: %q, want one key on both attempts", keys)
	}
	if got := saferetry.KeyFromError(err); got != keys[0] {
		t.Errorf("KeyFromError = %q, want %q", got, keys[0])
	}
	if got, with := srv.Created(), srv.CreatedWithKey(keys[0]); got != 1 || with != 1 {
		t.Errorf("invoices created: %d, under the key: %d; want 1 and 1", got, with)
	}
}

// When the outcome stays unknown, rc hands back the Transport's error:
// the *url.Error that http.Client.Do returns, around a
// *saferetry.RequestError that carries the key and the attempt count.
func TestConfigureKeepsOutcomeUnknown(t *testing.T) {
	tests := []struct {
		name         string
		script       []saferetrytest.Fault
		opts         []saferetry.Option
		wantAttempts int
		wantCreated  int
	}{
		{"retries spent on lost connections", slices.Repeat([]saferetrytest.Fault{saferetrytest.FaultDropBeforeProcessing}, 4), nil, 4, 0},
		{"no retries, answer lost", []saferetrytest.Fault{saferetrytest.FaultDropAfterProcessing},
			[]saferetry.Option{saferetry.WithMaxRetries(0)}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := saferetrytest.StartChiftServer(t)
			srv.Script(tt.script...)
			rc := configured(t, append([]saferetry.Option{saferetry.WithChift()}, tt.opts...)...)

			resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
			closeResp(resp)
			if resp != nil || !errors.Is(err, saferetry.ErrOutcomeUnknown) {
				t.Fatalf("got response %v and error %v, want an error matching ErrOutcomeUnknown", resp, err)
			}
			urlErr, ok := err.(*url.Error)
			if !ok {
				t.Fatalf("error is a %T, want the *url.Error http.Client.Do returns", err)
			}
			reqErr, ok := urlErr.Err.(*saferetry.RequestError)
			if !ok || reqErr.Attempts != tt.wantAttempts || !reqErr.MaybeSent {
				t.Fatalf("inside the *url.Error: %T %v, want a *saferetry.RequestError, MaybeSent, %d attempt(s)", urlErr.Err, urlErr.Err, tt.wantAttempts)
			}
			keys := keysOf(srv.Requests())
			if len(keys) != tt.wantAttempts || distinct(keys) != 1 || keys[0] == "" {
				t.Fatalf("keys sent: %q, want one key on %d attempt(s)", keys, tt.wantAttempts)
			}
			key := saferetry.KeyFromError(err)
			if key != keys[0] {
				t.Errorf("KeyFromError = %q, want %q", key, keys[0])
			}
			if got := srv.CreatedWithKey(key); got != tt.wantCreated || srv.Created() != tt.wantCreated {
				t.Errorf("invoices under the key from the error: %d (all: %d), want %d", got, srv.Created(), tt.wantCreated)
			}
		})
	}
}

// Attempts multiply in the naive stack: retryablehttp's 5 tries, each a
// logical request the Transport tries 4 times, each with its own key. Its
// error wraps the last try's (client.go keeps %w), so KeyFromError names
// the fifth key, not the first; after a status it wraps nothing.
func TestNaiveStackMultipliesAttempts(t *testing.T) {
	tests := []struct {
		fault       saferetrytest.Fault
		wantUnknown bool
	}{
		{saferetrytest.FaultUnavailable, false},
		{saferetrytest.FaultDropBeforeProcessing, true},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			srv := saferetrytest.StartChiftServer(t)
			srv.Script(slices.Repeat([]saferetrytest.Fault{tt.fault}, 20)...)
			rc := naive(t, saferetry.WithChift())

			resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
			closeResp(resp)
			if resp != nil || err == nil || !strings.Contains(err.Error(), "giving up after 5 attempt(s)") {
				t.Fatalf("got response %v and error %v, want retryablehttp's \"giving up after 5 attempt(s)\"", resp, err)
			}
			keys := keysOf(srv.Requests())
			if len(keys) != 20 || distinct(keys) != 5 {
				t.Fatalf("%d requests with %d keys, want 20 (5 x 4) with 5", len(keys), distinct(keys))
			}
			if got := errors.Is(err, saferetry.ErrOutcomeUnknown); got != tt.wantUnknown {
				t.Errorf("errors.Is(err, ErrOutcomeUnknown) = %v, want %v (err: %v)", got, tt.wantUnknown, err)
			}
			if tt.wantUnknown && saferetry.KeyFromError(err) != keys[19] {
				t.Errorf("KeyFromError = %q, want the last key %q", saferetry.KeyFromError(err), keys[19])
			}
		})
	}
}

// Under Configure the Transport's count is the only one: 4 attempts (1 +
// saferetry.DefaultMaxRetries), one key, its answer handed back.
func TestConfigureCountsAttemptsOnce(t *testing.T) {
	tests := []struct {
		fault      saferetrytest.Fault
		wantStatus int // 0: an error matching ErrOutcomeUnknown
	}{
		{saferetrytest.FaultUnavailable, http.StatusServiceUnavailable},
		{saferetrytest.FaultDropBeforeProcessing, 0},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			srv := saferetrytest.StartChiftServer(t)
			srv.Script(slices.Repeat([]saferetrytest.Fault{tt.fault}, 20)...)
			rc := configured(t, saferetry.WithChift())

			resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
			closeResp(resp)
			keys := keysOf(srv.Requests())
			if want := 1 + saferetry.DefaultMaxRetries; len(keys) != want || distinct(keys) != 1 {
				t.Fatalf("%d requests with %d keys, want %d with 1", len(keys), distinct(keys), want)
			}
			switch {
			case tt.wantStatus != 0 && (err != nil || resp == nil || resp.StatusCode != tt.wantStatus):
				t.Errorf("got response %v and error %v, want the last answer, %d", resp, err, tt.wantStatus)
			case tt.wantStatus == 0 && (resp != nil || !errors.Is(err, saferetry.ErrOutcomeUnknown) || saferetry.KeyFromError(err) != keys[0]):
				t.Errorf("got response %v and error %v, want ErrOutcomeUnknown with key %s", resp, err, keys[0])
			}
		})
	}
}

// A POST without a key is never sent again once it may have reached the
// server. retryablehttp's policy sends it again after a 500 and after a
// lost connection; the Transport hands back the 500, or ErrOutcomeUnknown.
func TestKeylessPOSTIsNotRetried(t *testing.T) {
	unkeyed := []saferetry.Option{saferetry.WithChift(), saferetry.WithStampedMethods(http.MethodPatch)}
	tests := []struct {
		name         string
		stack        func(*testing.T, ...saferetry.Option) *retryablehttp.Client
		fault        saferetrytest.Fault
		wantRequests int
		wantCreated  int
		wantStatus   int // 0: an error
	}{
		{"naive/500", naive, saferetrytest.FaultInternalError, 5, 0, 0},
		{"naive/connection lost", naive, saferetrytest.FaultDropAfterProcessing, 5, 5, 0},
		{"configured/500", configured, saferetrytest.FaultInternalError, 1, 0, http.StatusInternalServerError},
		{"configured/connection lost", configured, saferetrytest.FaultDropAfterProcessing, 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := saferetrytest.StartChiftServer(t)
			srv.Script(slices.Repeat([]saferetrytest.Fault{tt.fault}, 5)...)
			rc := tt.stack(t, unkeyed...)

			resp, err := rc.Post(invoicesURL(srv), "application/json", []byte(invoiceBody))
			closeResp(resp)
			keys := keysOf(srv.Requests())
			if len(keys) != tt.wantRequests || keys[0] != "" {
				t.Fatalf("keys sent: %q, want %d request(s) without a key", keys, tt.wantRequests)
			}
			if got := srv.Created(); got != tt.wantCreated {
				t.Errorf("invoices created: %d, want %d", got, tt.wantCreated)
			}
			if tt.wantStatus != 0 && (err != nil || resp == nil || resp.StatusCode != tt.wantStatus) {
				t.Errorf("got response %v and error %v, want the answer %d", resp, err, tt.wantStatus)
			}
			if tt.wantStatus == 0 && (resp != nil || err == nil) {
				t.Errorf("got response %v and error %v, want an error", resp, err)
			}
			if tt.fault == saferetrytest.FaultDropAfterProcessing && !errors.Is(err, saferetry.ErrOutcomeUnknown) {
				t.Errorf("error %v does not match ErrOutcomeUnknown", err)
			}
		})
	}
}

// zerohash does not deduplicate on X-Request-Id, and client_transfer_id is
// optional: a transfer posted without one and whose answer is lost is
// created twice by the naive stack, once under Configure, which reports
// the outcome as unknown.
func TestZeroHashTransferWithoutClientTransferID(t *testing.T) {
	tests := []struct {
		name        string
		stack       func(*testing.T, ...saferetry.Option) *retryablehttp.Client
		wantCreated int
		wantPosts   int
	}{
		{"naive", naive, 2, 2},
		{"configured", configured, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := saferetrytest.StartZeroHashServer(t)
			srv.Script(saferetrytest.FaultDropAfterProcessing)
			rc := tt.stack(t, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase), saferetry.WithAPIBaseURL(srv.URL))

			resp, err := rc.Post(srv.URL+"/transfers", "application/json", []byte(transferBody))
			closeResp(resp)
			if got, posts := srv.Created(), len(srv.Requests()); got != tt.wantCreated || posts != tt.wantPosts {
				t.Fatalf("transfers created: %d by %d POST(s), want %d by %d", got, posts, tt.wantCreated, tt.wantPosts)
			}
			if tt.wantCreated == 1 && (resp != nil || !errors.Is(err, saferetry.ErrOutcomeUnknown)) {
				t.Errorf("got response %v and error %v, want an error matching ErrOutcomeUnknown", resp, err)
			}
		})
	}
}

const transferBody = `{"from_participant_code":"PLAT01","from_account_group":"PLAT01","to_participant_code":"CUST01","to_account_group":"PLAT01","asset":"USD","amount":"20.10"}`

// A 503 with zh-allow-retry (nothing was processed) is retried by the
// Transport with the same X-Request-Id, and signed: the server refuses a
// request without a valid signature with 403.
func TestZeroHashRetryIsSigned(t *testing.T) {
	srv := saferetrytest.StartZeroHashServer(t)
	srv.Script(saferetrytest.FaultUnavailable)
	rc := configured(t, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase), saferetry.WithAPIBaseURL(srv.URL))

	resp, err := rc.Post(srv.URL+"/transfers", "application/json", []byte(transferBody))
	if err != nil || resp == nil {
		t.Fatalf("got response %v and error %v, want a response", resp, err)
	}
	closeResp(resp)
	keys := keysOf(srv.Requests())
	if resp.StatusCode != http.StatusCreated || len(keys) != 2 || distinct(keys) != 1 || srv.Created() != 1 {
		t.Fatalf("status %d, X-Request-Ids %q, %d transfer(s); want 201, one id on 2 requests, 1 transfer", resp.StatusCode, keys, srv.Created())
	}
}

// The context ends while the server holds the request. DefaultRetryPolicy
// returns ctx.Err(), which retryablehttp reports in place of the
// Transport's error: ErrOutcomeUnknown and the key are lost. Configure
// hands back the Transport's error.
func TestCancelKeepsTheTransportError(t *testing.T) {
	tests := []struct {
		name        string
		stack       func(*testing.T, ...saferetry.Option) *retryablehttp.Client
		wantUnknown bool
	}{
		{"naive", naive, false},
		{"configured", configured, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newHoldServer(t)
			rc := tt.stack(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-srv.arrived
				cancel()
			}()
			req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, srv.URL, []byte(invoiceBody))
			if err != nil {
				t.Fatal(err)
			}

			resp, err := rc.Do(req)
			closeResp(resp)
			if resp != nil || !errors.Is(err, context.Canceled) {
				t.Fatalf("got response %v and error %v, want an error matching context.Canceled", resp, err)
			}
			if got := srv.requests(); len(got) != 1 {
				t.Fatalf("requests: %d, want 1", len(got))
			}
			key := srv.requests()[0].key
			if got := errors.Is(err, saferetry.ErrOutcomeUnknown); got != tt.wantUnknown {
				t.Errorf("errors.Is(err, ErrOutcomeUnknown) = %v, want %v (err: %v)", got, tt.wantUnknown, err)
			}
			if got := saferetry.KeyFromError(err) == key; got != tt.wantUnknown {
				t.Errorf("KeyFromError = %q, request key %q: equal = %v, want %v", saferetry.KeyFromError(err), key, got, tt.wantUnknown)
			}
		})
	}
}
