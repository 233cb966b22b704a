package saferetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
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
	want := []string{"attempt", "key", "method", "retry", "sent", "status", "url", "wait"}
	for i, rec := range records {
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
	if r := records[0]; r["level"] != "WARN" || r["status"] != 503.0 || r["retry"] != true || r["attempt"] != 1.0 {
		t.Errorf("first record %v, want WARN, 503, retried, attempt 1", r)
	}
	if r := records[1]; r["level"] != "DEBUG" || r["status"] != 201.0 || r["retry"] != false || r["attempt"] != 2.0 {
		t.Errorf("second record %v, want DEBUG, 201, attempt 2", r)
	}
}
