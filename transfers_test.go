package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jarcoal/httpmock"
)

const zhBase = "https://api.test"

// zhMock scripts POST /transfers and GET /transfers answers separately and
// records every request.
type zhMock struct {
	t     *testing.T
	mu    sync.Mutex
	posts []reply
	gets  []reply
	log   []string // "POST {body}" or "GET /transfers?..."
	ids   []string // client_transfer_id of each POST
}

func newZHClient(t *testing.T, m *zhMock, opts ...Option) *Client {
	t.Helper()
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", zhBase+"/transfers", m.respond)
	mt.RegisterResponder("GET", zhBase+"/transfers", m.respond)
	base := []Option{WithHTTPClient(&http.Client{Transport: mt}), WithZeroHashAuth("key-1", testSecret, "pass-1"),
		WithBackoff(time.Millisecond, 2*time.Millisecond)}
	c, err := NewClient(zhBase, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (m *zhMock) respond(req *http.Request) (*http.Response, error) {
	if req.Header.Get("X-SCX-SIGNED") == "" {
		m.t.Errorf("%s %s is not signed", req.Method, req.URL)
	}
	m.mu.Lock()
	queue := &m.gets
	if req.Method == "POST" {
		body, _ := io.ReadAll(req.Body)
		var in struct {
			ID string `json:"client_transfer_id"`
		}
		json.Unmarshal(body, &in)
		m.ids = append(m.ids, in.ID)
		m.log = append(m.log, "POST")
		queue = &m.posts
	} else {
		m.log = append(m.log, "GET "+req.URL.RawQuery)
	}
	if len(*queue) == 0 {
		m.mu.Unlock()
		m.t.Errorf("unscripted %s %s", req.Method, req.URL)
		return httpmock.NewStringResponse(599, ""), nil
	}
	r := (*queue)[0]
	*queue = (*queue)[1:]
	m.mu.Unlock()
	return r.play(req)
}

func (m *zhMock) calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

// transferJSON is a transfer created now: Create takes a transfer found by
// a lookup as its own only if it was created after the id was first sent.
func transferJSON(id int64, clientID string) string {
	at := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	return fmt.Sprintf(`{"id":%d,"client_transfer_id":%q,"created_at":"`+at+`","updated_at":"`+at+`","status":"approved","from_participant_code":"PLAT01","from_account_group":"PLAT01","from_account_label":null,"to_participant_code":"CUST01","to_account_group":"PLAT01","to_account_label":null,"asset":"USD","amount":"20.10","movement_id":null,"admin_transfer":false,"prefunded":false}`, id, clientID)
}

func created(id int64, clientID string) reply {
	return answer(201, `{"message":`+transferJSON(id, clientID)+`}`)
}

func found(id int64, clientID string) reply {
	return answer(200, `{"message":[`+transferJSON(id, clientID)+`],"page":1,"page_size":50,"total_pages":1,"count":1}`)
}

var (
	notFound  = answer(200, `{"message":[],"page":1,"page_size":50,"total_pages":0,"count":0}`)
	duplicate = answer(400, `{"error":true,"message":"Request does not contain an unique client_transfer_id"}`)
)

func newTransferRequest(id string) TransferRequest {
	return TransferRequest{
		ClientTransferID: id, FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01", Asset: "USD", Amount: "20.1",
	}
}

func TestCreateFlow(t *testing.T) {
	const id = "8e03978e-40d5-43e8-bc93-6894a57f9324"
	q := "client_transfer_id=" + id
	tests := []struct {
		name    string
		posts   []reply
		gets    []reply
		want    CreateOutcome
		wantErr error
		calls   []string
	}{
		{"created at once", []reply{created(1, id)}, nil, OutcomeCreated, nil, []string{"POST"}},
		{"validation error: no lookup", []reply{answer(400, `{"errors":["body/asset is required"]}`)}, nil, 0, nil, []string{"POST"}},
		{"response lost after commit: one lookup, no repost", []reply{failure(errConnReset, true)}, []reply{found(7, id)},
			OutcomeRecovered, nil, []string{"POST", "GET " + q}},
		{"502 before commit: lookup, one repost with the same id", []reply{answer(502, "<html>502</html>"), created(8, id)}, []reply{notFound},
			OutcomeReposted, nil, []string{"POST", "GET " + q, "POST"}},
		{"500 is ambiguous too", []reply{answer(500, `{"error":"Internal Server Error"}`)}, []reply{found(9, id)},
			OutcomeRecovered, nil, []string{"POST", "GET " + q}},
		{"slow commit racing the lookup: repost gets the duplicate, then lookup until visible",
			[]reply{answer(504, ""), duplicate}, []reply{notFound, notFound, found(10, id)},
			OutcomeRecovered, nil, []string{"POST", "GET " + q, "POST", "GET " + q, "GET " + q}},
		{"lookups failing then recovering", []reply{answer(504, "")},
			[]reply{answer(503, ""), failure(errConnReset, true), answer(500, ""), found(11, id)},
			OutcomeRecovered, nil, nil},
		// Retry-After: 0 spares the test zerohash's 10 s lock-out after a bare 429.
		{"never sent (429): posted again, no lookup", []reply{{status: 429, body: "Too Many Requests", header: http.Header{"Retry-After": {"0"}}}, created(12, id)}, nil,
			OutcomeCreated, nil, []string{"POST", "POST"}},
		{"503 with zh-allow-retry: posted again, no lookup",
			[]reply{{status: 503, header: http.Header{"Zh-Allow-Retry": {"true"}}}, created(13, id)}, nil, OutcomeCreated, nil, []string{"POST", "POST"}},
		{"duplicate on the first post: another's, named by one lookup", []reply{duplicate}, []reply{found(14, id)}, 0, ErrDuplicateClientTransferID, []string{"POST", "GET " + q}},
		{"lookup keeps failing: outcome unknown", []reply{answer(502, "")},
			[]reply{answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, "")},
			0, ErrOutcomeUnknown, nil},
		{"ambiguous every time: stops after 4 posts, outcome unknown",
			[]reply{answer(502, ""), answer(502, ""), answer(502, ""), answer(502, "")}, []reply{notFound, notFound, notFound, notFound},
			0, ErrOutcomeUnknown, []string{"POST", "GET " + q, "POST", "GET " + q, "POST", "GET " + q, "POST", "GET " + q}},
		{"lookup refused (403): outcome unknown, not retried", []reply{answer(502, "")},
			[]reply{answer(403, `{"error":true,"message":"bad signature"}`)}, 0, ErrOutcomeUnknown, []string{"POST", "GET " + q}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &zhMock{t: t, posts: tt.posts, gets: tt.gets}
			c := newZHClient(t, m, WithMaxRetries(0))
			tr, err := c.Transfers.Create(context.Background(), newTransferRequest(id))
			if tt.want != 0 {
				if err != nil || tr.Outcome != tt.want || tr.ClientTransferID != id {
					t.Fatalf("got %+v, %v; want outcome %v", tr, err, tt.want)
				}
			} else if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || (errors.Is(err, ErrOutcomeUnknown) && KeyFromError(err) != id) || !strings.Contains(err.Error(), id) {
					t.Fatalf("err = %v; want %v carrying %s", err, tt.wantErr, id)
				}
			} else {
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("err = %v; want the 400 as *APIError", err)
				}
			}
			if tt.calls != nil && strings.Join(m.calls(), " | ") != strings.Join(tt.calls, " | ") {
				t.Fatalf("calls:\n got %q\nwant %q", m.calls(), tt.calls)
			}
			for i, got := range m.ids {
				if got != id {
					t.Errorf("POST %d carried client_transfer_id %q", i+1, got)
				}
			}
			if len(m.posts) != 0 || len(m.gets) != 0 {
				t.Errorf("script not used up: %d posts, %d gets left", len(m.posts), len(m.gets))
			}
		})
	}
}

func TestCreateGeneratesAUUIDv4(t *testing.T) {
	m := &zhMock{t: t}
	m.posts = []reply{created(1, "will-be-checked")}
	c := newZHClient(t, m)
	c.Transfers.Create(context.Background(), newTransferRequest(""))
	if len(m.ids) != 1 {
		t.Fatalf("%d posts", len(m.ids))
	}
	if u, err := uuid.Parse(m.ids[0]); err != nil || u.Version() != 4 {
		t.Fatalf("generated client_transfer_id %q is not a UUIDv4", m.ids[0])
	}
}

func TestCreateRefusesAnotherTransferUnderTheSameID(t *testing.T) {
	const id = "reused-id"
	m := &zhMock{t: t, posts: []reply{duplicate}, gets: []reply{found(3, id)}}
	c := newZHClient(t, m)
	req := newTransferRequest(id)
	req.Amount = "99"
	_, err := c.Transfers.Create(context.Background(), req)
	if !errors.Is(err, ErrDuplicateClientTransferID) || !strings.Contains(err.Error(), "other accounts, asset or amount") {
		t.Fatalf("err = %v", err)
	}
}

func TestCreateResumedNearTheWindowNeverReposts(t *testing.T) {
	const id = "resumed-id"
	t.Run("not found: no repost", func(t *testing.T) {
		m := &zhMock{t: t, gets: []reply{notFound}}
		c := newZHClient(t, m)
		req := newTransferRequest(id)
		req.FirstSentAt = time.Now().Add(-72 * time.Hour)
		_, err := c.Transfers.Create(context.Background(), req)
		if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrKeyExpired) || !strings.Contains(err.Error(), "72h") || KeyFromError(err) != id {
			t.Fatalf("err = %v", err)
		}
		if got := m.calls(); len(got) != 1 || got[0] == "POST" {
			t.Fatalf("calls = %q, want one lookup and no post", got)
		}
	})
	t.Run("found: recovered", func(t *testing.T) {
		m := &zhMock{t: t, gets: []reply{found(5, id)}}
		c := newZHClient(t, m)
		req := newTransferRequest(id)
		req.FirstSentAt = time.Now().Add(-80 * time.Hour)
		tr, err := c.Transfers.Create(context.Background(), req)
		if err != nil || tr.Outcome != OutcomeRecovered || tr.ID != 5 {
			t.Fatalf("got %+v, %v", tr, err)
		}
	})
	t.Run("resumed within the window: lookup first, then repost", func(t *testing.T) {
		m := &zhMock{t: t, gets: []reply{notFound}, posts: []reply{created(6, id)}}
		c := newZHClient(t, m)
		req := newTransferRequest(id)
		req.FirstSentAt = time.Now().Add(-time.Hour)
		tr, err := c.Transfers.Create(context.Background(), req)
		if err != nil || tr.Outcome != OutcomeReposted || strings.Join(m.calls(), ",") != "GET client_transfer_id="+id+",POST" {
			t.Fatalf("got %+v, %v, calls %q", tr, err, m.calls())
		}
	})
}

func TestCreateValidatesBeforeSending(t *testing.T) {
	tests := map[string]func(*TransferRequest){
		"missing asset":        func(r *TransferRequest) { r.Asset = "" },
		"negative amount":      func(r *TransferRequest) { r.Amount = "-1" },
		"zero amount":          func(r *TransferRequest) { r.Amount = "0.00" },
		"amount not a decimal": func(r *TransferRequest) { r.Amount = "1e3" },
		"bad label":            func(r *TransferRequest) { r.FromAccountLabel = "has space" },
		"bad client id":        func(r *TransferRequest) { r.ClientTransferID = "tab\there" },
		"missing from":         func(r *TransferRequest) { r.FromParticipantCode = " " },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			m := &zhMock{t: t}
			c := newZHClient(t, m)
			req := newTransferRequest("")
			mutate(&req)
			_, err := c.Transfers.Create(context.Background(), req)
			if err == nil || !strings.HasPrefix(err.Error(), "saferetry: invalid transfer request") {
				t.Fatalf("err = %v", err)
			}
			if len(m.calls()) != 0 {
				t.Fatalf("sent %q", m.calls())
			}
		})
	}
}

func TestDecodeTransfer(t *testing.T) {
	bare := transferJSON(1152665, "abc")
	tests := map[string]string{
		"wrapped":        `{"message":` + bare + `}`,
		"bare":           bare,
		"numeric amount": strings.Replace(bare, `"amount":"20.10"`, `"amount":20.10`, 1),
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			tr, err := decodeTransfer([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if tr.ID != 1152665 || tr.ClientTransferID != "abc" || tr.Amount != "20.10" || tr.Status != "approved" ||
				tr.FromAccountLabel != "" || tr.MovementID != "" || tr.CreatedAt.IsZero() {
				t.Fatalf("decoded %+v", tr)
			}
		})
	}
	for _, bad := range []string{`{"message":{"id":"x"}}`, `{"id":1.5}`, `[`, ``} {
		if _, err := decodeTransfer([]byte(bad)); err == nil {
			t.Errorf("decodeTransfer(%q) accepted", bad)
		}
	}
	t.Run("null client_transfer_id", func(t *testing.T) {
		tr, err := decodeTransfer([]byte(strings.Replace(bare, `"client_transfer_id":"abc"`, `"client_transfer_id":null`, 1)))
		if err != nil || tr.ClientTransferID != "" {
			t.Fatalf("%+v, %v", tr, err)
		}
	})
}

func TestKeyFromErrorPrefersTheCreatesKey(t *testing.T) {
	inner := &RequestError{Method: "POST", URL: zhBase + "/transfers", Key: "x-request-id-of-one-attempt", Attempts: 1, MaybeSent: true, Err: errConnReset}
	err := fmt.Errorf("wrapped: %w", &OutcomeError{Key: "client-transfer-id-1", Reason: "test", Err: inner})
	if got := KeyFromError(err); got != "client-transfer-id-1" {
		t.Fatalf("KeyFromError = %q, want the client_transfer_id", got)
	}
}
