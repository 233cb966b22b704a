package saferetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// answerLosingTransport forwards the first POST to the server and then
// loses its answer, as a connection reset after the server wrote it would.
type answerLosingTransport struct {
	next http.RoundTripper
	once sync.Once
}

func (l *answerLosingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	lose := false
	if req.Method == http.MethodPost {
		l.once.Do(func() { lose = true })
	}
	resp, err := l.next.RoundTrip(req)
	if err != nil || !lose {
		return resp, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, io.ErrUnexpectedEOF
}

// Another process made a transfer under the id 90 s before this create's
// first POST, by a clock SyncZeroHashClock has just aligned with
// zerohash's. This create's POST was answered "not unique" (the answer was
// lost). zerohash refuses timestamps more than 60 s off its clock, so a
// transfer of this create's cannot predate its first send by 90 s: the one
// found is another's.
func TestFlowEdgeTransferCreatedBeforeTheFirstSendIsNotClaimed(t *testing.T) {
	srv := flowServer(t)
	other := flowClientOf(t, srv)
	const id = "skew-90"
	if _, err := other.Transfers.Create(context.Background(), flowRequest(id)); err != nil {
		t.Fatal(err)
	}
	srv.AgeTransfer(id, 90*time.Second)

	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	c, err := NewClient(srv.URL, WithHTTPClient(&http.Client{Transport: &answerLosingTransport{next: base}}),
		WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase), WithBackoff(time.Millisecond, 5*time.Millisecond), WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SyncZeroHashClock(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr, err := c.Transfers.Create(context.Background(), flowRequest(id))
	if srv.CreatedWithClientTransferID(id) != 1 {
		t.Fatalf("setup: %d transfers under %s", srv.CreatedWithClientTransferID(id), id)
	}
	if err == nil {
		t.Fatalf("Create returned transfer %d (%s), made by another process 90 s before this create's first POST, as its own", tr.ID, tr.Outcome)
	}
	var mismatch *TransferMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("err = %v; want a *TransferMismatchError", err)
	}
}

// A create's first run: the host clock is 5 minutes fast, so the client
// calls SyncZeroHashClock and records FirstSentAt on its local clock, as
// TransferRequest documents, then crashes after the POST was processed.
// Before the resume, the host's clock is corrected (NTP). The resumed run
// syncs again and looks the id up: the transfer is this create's, and
// must not be reported as another's (a definite failure the caller would
// answer with a new id, and a second payout).
func TestFlowEdgeTransferResumeAfterTheHostClockWasCorrected(t *testing.T) {
	var shift atomic.Int64 // zerohash's time is the real time plus shift
	serverNow := func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
	srv := saferetrytest.NewZeroHashServer()
	srv.Now = serverNow
	t.Cleanup(srv.Close)
	const id = "clock-step-1"

	fast := func() time.Time { return serverNow().Add(5 * time.Minute) }
	first := flowClientOf(t, srv, WithZeroHashClock(fast))
	if _, err := first.SyncZeroHashClock(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := flowRequest(id)
	firstSentAt := fast() // recorded before the first send, on the signing clock
	if _, err := first.Transfers.Create(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	// The process died before it recorded the result. Six minutes later the
	// host clock is right and the create is resumed.
	shift.Add(int64(6 * time.Minute))
	second := flowClientOf(t, srv, WithZeroHashClock(serverNow))
	if _, err := second.SyncZeroHashClock(context.Background()); err != nil {
		t.Fatal(err)
	}
	req.FirstSentAt = firstSentAt
	tr, err := second.Transfers.Create(context.Background(), req)
	if srv.CreatedWithClientTransferID(id) != 1 {
		t.Fatalf("%d transfers under %s", srv.CreatedWithClientTransferID(id), id)
	}
	if err != nil && !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v (%T); the transfer is this create's: want it recovered, or at worst ErrOutcomeUnknown", err, err)
	}
	if err == nil && tr.Outcome != OutcomeRecovered {
		t.Fatalf("outcome %s; want recovered", tr.Outcome)
	}
}
