package saferetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The log record is part of the API: its message, its level rule and its
// attribute names (WithLogger, README "Logs"). A 503 then a 201: a Warn
// record of a retried attempt, then a Debug record of the answer.
func TestLogRecordContract(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithLogger(logger), saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/things?token=secret", strings.NewReader(`{}`))
	req.Header.Set(saferetry.DefaultRequestIDHeader, "key-1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		records = append(records, rec)
	}
	if len(records) != 2 {
		t.Fatalf("%d records, want 2: %s", len(records), buf.String())
	}
	for i, rec := range records {
		want := []string{"attempt", "key", "method", "retry", "sent", "status", "url", "wait"}
		if i == 0 {
			want = []string{"attempt", "key", "method", "reason", "retry", "sent", "status", "url", "wait"}
		}
		if rec["msg"] != "saferetry attempt" {
			t.Errorf("record %d message %v", i, rec["msg"])
		}
		var names []string
		for k := range rec {
			if k != "time" && k != "level" && k != "msg" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("record %d attributes %v, want %v", i, names, want)
		}
		if rec["key"] != "key-1" || rec["method"] != "POST" || !strings.Contains(rec["url"].(string), "token=REDACTED") {
			t.Errorf("record %d: %v", i, rec)
		}
	}
	if r := records[0]; r["level"] != "WARN" || r["status"] != 503.0 || r["retry"] != true || r["attempt"] != 1.0 || r["reason"] != "status_503" {
		t.Errorf("first record %v, want WARN, 503, retried, attempt 1", r)
	}
	if r := records[1]; r["level"] != "DEBUG" || r["status"] != 201.0 || r["retry"] != false || r["attempt"] != 2.0 {
		t.Errorf("second record %v, want DEBUG, 201, attempt 2", r)
	}
}

// jsonRecords decodes the JSON lines a slog.JSONHandler wrote, without
// their time.
func jsonRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		delete(rec, "time")
		records = append(records, rec)
	}
	return records
}

// A request that fails for good writes "saferetry request failed" at
// Warn after its attempts' records; a budget refusal shows on the attempt
// it stopped; a Create writes "saferetry create" at the level of its
// outcome: Info for a recovered one.
func TestLogRecordsOfGiveUpAndCreate(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	base := rtFunc(func(req *http.Request) (*http.Response, error) { return nil, io.ErrUnexpectedEOF })
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithLogger(logger), saferetry.WithMaxRetries(1),
		saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/charges", strings.NewReader(`{}`))
	req.Header.Set(saferetry.DefaultRequestIDHeader, "key-2")
	if _, err := hc.Do(req); !errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatalf("err %v", err)
	}
	records := jsonRecords(t, &buf)
	if len(records) != 3 {
		t.Fatalf("%d records, want 2 attempts and the failure: %v", len(records), records)
	}
	last := records[2]
	delete(last, "error")
	want := map[string]any{"level": "WARN", "msg": "saferetry request failed", "method": "POST", "url": "http://api.test/charges",
		"key": "key-2", "attempts": 2.0, "outcome_unknown": true}
	if !maps.Equal(last, want) {
		t.Errorf("failure record %v, want %v and an error", last, want)
	}
	if r := records[0]; r["reason"] != "transport_error" || r["retry"] != true {
		t.Errorf("first attempt %v, want retried for transport_error", r)
	}

	buf.Reset()
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithLogger(logger),
		saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	const consumer = "00000000-0000-4000-8000-000000000001"
	if _, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "F-9"},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "inv-F-9",
	}); err != nil {
		t.Fatal(err)
	}
	records = jsonRecords(t, &buf)
	var msgs []string
	for _, r := range records {
		msgs = append(msgs, r["msg"].(string))
	}
	// The POST: a dropped attempt, then REQUEST_ALREADY_PROCESSED, which
	// ends the request in an error; the lookup; the create, recovered.
	if wantMsgs := []string{"saferetry attempt", "saferetry attempt", "saferetry request failed", "saferetry attempt", "saferetry create"}; !slices.Equal(msgs, wantMsgs) {
		t.Fatalf("records %q, want %q", msgs, wantMsgs)
	}
	wantCreate := map[string]any{"level": "INFO", "msg": "saferetry create", "api": "chift", "key": "inv-F-9", "outcome": "recovered", "posts": 1.0, "lookups": 1.0}
	if !maps.Equal(records[4], wantCreate) {
		t.Errorf("create record %v, want %v", records[4], wantCreate)
	}
}

// Under a budget that is spent, the attempt whose retry was refused says
// so.
func TestLogRecordOfABudgetRefusal(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	base := rtFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 503, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
	})
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithLogger(logger), saferetry.WithMaxRetries(20),
		saferetry.WithRetryBudget(0, 0), saferetry.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // 5 requests of 20 retries spend the burst of 100
		resp, err := hc.Get("http://api.test/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	records := jsonRecords(t, &buf)
	last := records[len(records)-1]
	if len(records) != 5*21+1 || last["budget_exhausted"] != true || last["reason"] != "status_503" || last["retry"] != false || last["attempt"] != 1.0 {
		t.Errorf("%d records, the last %v; want 106, the last the sixth request's first attempt, refused by the budget", len(records), last)
	}
	for _, r := range records[:len(records)-1] {
		if _, ok := r["budget_exhausted"]; ok {
			t.Fatalf("record %v says budget_exhausted before the budget was spent", r)
		}
	}
}
