package saferetry_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	saferetry "github.com/saferetry/saferetry-go"
)

func TestChiftCreatePrepare(t *testing.T) {
	in := saferetry.ChiftCreate{Path: "consumers/c1/invoicing/invoices", Body: map[string]any{"total": 1},
		ConsumerID: "c1", ConnectionID: "k1"}
	got, err := in.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	if u, err := uuid.Parse(got.RequestID); err != nil || u.Version() != 4 {
		t.Fatalf("RequestID %q is not a UUIDv4", got.RequestID)
	}
	raw, ok := got.Body.(json.RawMessage)
	if !ok || string(raw) != `{"total":1}` {
		t.Fatalf("Body = %#v, want json.RawMessage {\"total\":1}", got.Body)
	}
	if in.RequestID != "" {
		t.Fatal("Prepare changed the caller's value")
	}
	again, err := got.Prepare()
	if err != nil || again.RequestID != got.RequestID || string(again.Body.(json.RawMessage)) != string(raw) {
		t.Fatalf("a prepared create prepared again = %+v, %v: want it unchanged", again, err)
	}

	bad := in
	bad.Body = "not an object"
	if _, err := bad.Prepare(); err == nil || !strings.Contains(err.Error(), "Body is a string") {
		t.Fatalf("string body: %v", err)
	}
	bad = in
	bad.RequestID = " spaced "
	if _, err := bad.Prepare(); !errors.Is(err, saferetry.ErrInvalidKey) {
		t.Fatalf("bad request id: %v", err)
	}
	bad = in
	bad.RequestID, bad.FirstSentAt = "old", time.Now().Add(-180*24*time.Hour)
	if _, err := bad.Prepare(); !errors.Is(err, saferetry.ErrKeyExpired) || saferetry.KeyFromError(err) != "old" {
		t.Fatalf("expired: %v", err)
	}
}

func TestTransferRequestPrepare(t *testing.T) {
	req := saferetry.TransferRequest{FromParticipantCode: "A", FromAccountGroup: "G", ToParticipantCode: "B",
		ToAccountGroup: "G", Asset: "USD", Amount: "1.5"}
	got, err := req.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	if u, err := uuid.Parse(got.ClientTransferID); err != nil || u.Version() != 4 {
		t.Fatalf("ClientTransferID %q is not a UUIDv4", got.ClientTransferID)
	}
	if again, _ := got.Prepare(); again.ClientTransferID != got.ClientTransferID {
		t.Fatal("a prepared request got a new id")
	}
	req.Amount = "-1"
	req.Asset = ""
	_, err = req.Prepare()
	if err == nil || !strings.Contains(err.Error(), "invalid transfer request") || !strings.Contains(err.Error(), "Asset") || !strings.Contains(err.Error(), "Amount") {
		t.Fatalf("err = %v, want both fields named", err)
	}
}

func TestClientProtocol(t *testing.T) {
	for _, tc := range []struct {
		opts []saferetry.Option
		want string
	}{
		{[]saferetry.Option{saferetry.WithChift()}, "chift"},
		{[]saferetry.Option{saferetry.WithZeroHashRequestID()}, "zerohash"},
		{nil, ""},
		{[]saferetry.Option{saferetry.WithRequestIDHeader("X-Key")}, ""},
	} {
		c, err := saferetry.NewClient("https://api.example.test", tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Protocol(); got != tc.want {
			t.Errorf("Protocol() = %q, want %q", got, tc.want)
		}
	}
}
