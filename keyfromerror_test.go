package saferetry_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// KeyFromError gives a Transfers.Create's client_transfer_id for a
// definite failure too (a *NotCreatedError after 429s, a 4xx answer),
// not only for an unknown outcome: the errors inside hold only the POST's
// X-REQUEST-ID.
func TestKeyFromErrorOfFailedTransfer(t *testing.T) {
	srv := saferetrytest.StartZeroHashServer(t)
	for range 10 {
		srv.Script(saferetrytest.FaultRateLimited)
	}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	const id = "11111111-2222-4333-8444-555555555555"
	_, err = client.Transfers.Create(ctx, saferetry.TransferRequest{
		ClientTransferID:    id,
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01", ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "1.00",
	})
	if err == nil {
		t.Fatal("created; want a failure")
	}
	if got := saferetry.KeyFromError(err); got != id {
		t.Errorf("KeyFromError = %q, want the client_transfer_id %q (err %v; RequestIDFromError %q)", got, id, err, saferetry.RequestIDFromError(err))
	}
}

// A 4xx answer to the first POST is a definite refusal: the error is the
// *APIError as zerohash gave it, and KeyFromError names the create.
func TestKeyFromErrorOfRefusedTransfer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"errors":["insufficient balance"]}`))
	}))
	defer srv.Close()
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth("key", "c2VjcmV0", "pass"))
	if err != nil {
		t.Fatal(err)
	}
	const id = "payout-refused-1"
	_, err = client.Transfers.Create(context.Background(), saferetry.TransferRequest{
		ClientTransferID:    id,
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01", ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "1.00",
	})
	var apiErr *saferetry.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatalf("err %v; want the 400 *APIError, outcome known", err)
	}
	if got := saferetry.KeyFromError(err); got != id || err.Error() != apiErr.Error() {
		t.Errorf("KeyFromError = %q, want %q; message %q, want the answer's %q", got, id, err, apiErr)
	}
}
