package saferetry_test

import (
	"context"
	"slices"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The step starts over at each unknown outcome: the first lookup after a
// repost's unknown outcome is a lookup again, not a poll, so the lookups
// metric by step counts each unknown outcome's first question.
func TestStepOfLookupAfterRepost(t *testing.T) {
	srv := saferetrytest.StartZeroHashServer(t)
	srv.Script(saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropBeforeProcessing)
	var steps []string
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond), saferetry.WithMaxRetries(0),
		saferetry.WithHooks(saferetry.Hooks{RequestStart: func(ctx context.Context, r saferetry.RequestStart) context.Context {
			steps = append(steps, r.Method+" "+r.Step)
			return ctx
		}}))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := client.Transfers.Create(context.Background(), saferetry.TransferRequest{
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01", ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "1.00",
	})
	if err != nil || tr.Outcome != saferetry.OutcomeReposted {
		t.Fatalf("%+v %v", tr, err)
	}
	want := []string{"POST post", "GET lookup", "POST post", "GET lookup", "POST post"}
	if !slices.Equal(steps, want) {
		t.Errorf("steps %q, want %q", steps, want)
	}
}
