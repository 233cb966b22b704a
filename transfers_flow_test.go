package saferetry

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// flowServer is a zerohash fake closed when the test ends.
func flowServer(t *testing.T) *saferetrytest.ZeroHashServer {
	t.Helper()
	srv := saferetrytest.NewZeroHashServer()
	t.Cleanup(srv.Close)
	return srv
}

// flowClient talks to url with zerohash's signatures and short backoff.
func flowClient(t *testing.T, url string, creds [3]string, opts ...Option) *Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(hc.CloseIdleConnections)
	base := []Option{WithHTTPClient(hc), WithZeroHashAuth(creds[0], creds[1], creds[2]),
		WithBackoff(time.Millisecond, 5*time.Millisecond)}
	c, err := NewClient(url, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func flowClientOf(t *testing.T, srv *saferetrytest.ZeroHashServer, opts ...Option) *Client {
	t.Helper()
	return flowClient(t, srv.URL, [3]string{srv.APIKey, srv.Secret, srv.Passphrase}, opts...)
}

func flowRequest(id string) TransferRequest {
	return TransferRequest{
		ClientTransferID: id, FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01", Asset: "USD", Amount: "20.10",
	}
}

// Kind 5: FirstSentAt says "this resumes a create sent at that time":
// without the id it was sent with, or in the future, it cannot be true.
func TestCreateRefusesInconsistentFirstSentAt(t *testing.T) {
	tests := map[string]func(*TransferRequest){
		"an hour ago, no ClientTransferID": func(r *TransferRequest) {
			r.ClientTransferID, r.FirstSentAt = "", time.Now().Add(-time.Hour)
		},
		"in the future": func(r *TransferRequest) { r.FirstSentAt = time.Now().Add(time.Hour) },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			srv := flowServer(t)
			c := flowClientOf(t, srv)
			req := flowRequest("resume-1")
			mutate(&req)
			_, err := c.Transfers.Create(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), "field FirstSentAt") || !strings.HasPrefix(err.Error(), "saferetry: invalid transfer request") {
				t.Fatalf("err = %v; want a refusal naming FirstSentAt", err)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Fatalf("the server received %d requests", n)
			}
		})
	}
}
