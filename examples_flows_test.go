package saferetry_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path"
	"slices"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// A Chift invoice whose answer is lost after Chift created it. The retry
// under the same request id hears REQUEST_ALREADY_PROCESSED, and Create
// reads the invoice's id from Chift's monitoring log: one invoice, its id
// returned, marked Recovered.
func ExampleChiftService_Create() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.RequireAuth = true
	srv.Script(saferetrytest.FaultDropAfterProcessing) // the next create is processed, its answer lost

	client, err := saferetry.NewClient(srv.URL,
		saferetry.WithChiftAuth(saferetry.ChiftCredentials{
			ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, AccountID: srv.AccountID,
		}),
		saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond)) // short waits for the example
	if err != nil {
		log.Fatal(err)
	}
	const consumerID = "00000000-0000-4000-8000-000000000001"
	created, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path:         "consumers/" + consumerID + "/invoicing/invoices",
		Body:         map[string]any{"invoice_number": "F-2026-0042", "currency": "EUR", "total": 121},
		ConsumerID:   consumerID,
		ConnectionID: srv.ConnectionID, // where the monitoring log is read
		RequestID:    "invoice-F-2026-0042",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("entity:", created.EntityID)
	fmt.Println("status:", created.StatusCode)
	fmt.Println("recovered:", created.Recovered)
	fmt.Println("invoices created:", srv.Created(), "under this id:", srv.CreatedWithKey(created.RequestID))
	// Output:
	// entity: inv_1
	// status: 200
	// recovered: true
	// invoices created: 1 under this id: 1
}

// Two zerohash transfers whose POSTs fail ambiguously. The first is
// processed and its answer lost: the lookup by client_transfer_id finds it
// (recovered). The second is cut before processing: the lookup finds
// nothing, and the same id is posted again (reposted). Neither is created
// twice.
func ExampleTransfersService_Create() {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultDropBeforeProcessing)

	client, err := saferetry.NewClient(srv.URL,
		saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond)) // short waits for the example
	if err != nil {
		log.Fatal(err)
	}
	for _, id := range []string{"payout-0042", "payout-0043"} {
		tr, err := client.Transfers.Create(context.Background(), saferetry.TransferRequest{
			ClientTransferID:    id,
			FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
			ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
			Asset: "USD", Amount: "20.10",
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: transfer %d, %s, %d with this id\n", tr.ClientTransferID, tr.ID, tr.Outcome, srv.CreatedWithClientTransferID(id))
	}
	fmt.Println("transfers created:", srv.Created())
	// Output:
	// payout-0042: transfer 1152000, recovered, 1 with this id
	// payout-0043: transfer 1152001, reposted, 1 with this id
	// transfers created: 2
}

// Branch on a create's error: ErrOutcomeUnknown first, since an unknown
// outcome may hold any of the definite errors, then the definite ones.
// The fake is set up so that each of three creates ends in one of them.
func ExampleKeyFromError() {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	client, err := saferetry.NewClient(srv.URL,
		saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond)) // short waits for the example
	if err != nil {
		log.Fatal(err)
	}
	transfer := func(id, amount string) saferetry.TransferRequest {
		return saferetry.TransferRequest{
			ClientTransferID:    id,
			FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
			ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
			Asset: "USD", Amount: amount,
		}
	}
	report := func(err error) {
		var notCreated *saferetry.NotCreatedError
		var mismatch *saferetry.TransferMismatchError
		switch {
		case err == nil:
			fmt.Println("created")
		case errors.Is(err, saferetry.ErrOutcomeUnknown):
			// May or may not exist: keep the id and reconcile with it.
			fmt.Println("outcome unknown: reconcile", saferetry.KeyFromError(err))
		case errors.As(err, &notCreated): // errors.Is(err, saferetry.ErrTransferNotCreated)
			fmt.Printf("not created after %d posts: post %s again later\n", notCreated.Posts, notCreated.ClientTransferID)
		case errors.As(err, &mismatch): // errors.Is(err, saferetry.ErrDuplicateClientTransferID)
			fmt.Printf("%s holds transfer %d, not this one: use a new id\n", mismatch.ClientTransferID, mismatch.TransferID)
		default:
			fmt.Println("refused:", err) // a definite *APIError, or refused before sending
		}
	}
	ctx := context.Background()

	// The POST is processed and its answer lost; every lookup fails.
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	srv.ScriptLookup(slices.Repeat([]saferetrytest.Fault{saferetrytest.FaultInternalError}, 9)...)
	firstSent := time.Now()
	_, err = client.Transfers.Create(ctx, transfer("payout-1", "20.10"))
	report(err)

	// Every POST under payout-2 is answered 503 with zh-allow-retry: true.
	srv.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault {
		if id == "payout-2" {
			return saferetrytest.FaultUnavailable
		}
		return saferetrytest.FaultNone
	})
	_, err = client.Transfers.Create(ctx, transfer("payout-2", "5.00"))
	report(err)

	// payout-1 is taken by the transfer above, which has another amount.
	_, err = client.Transfers.Create(ctx, transfer("payout-1", "99.00"))
	report(err)

	// Reconcile payout-1: the same create again, with when it was first
	// sent, looks the id up before posting.
	req := transfer("payout-1", "20.10")
	req.FirstSentAt = firstSent
	tr, err := client.Transfers.Create(ctx, req)
	report(err)
	if err == nil {
		fmt.Println("payout-1:", tr.Outcome, "transfers created:", srv.Created())
	}
	// Output:
	// outcome unknown: reconcile payout-1
	// not created after 4 posts: post payout-2 again later
	// payout-1 holds transfer 1152000, not this one: use a new id
	// created
	// payout-1: recovered transfers created: 1
}

// Scripting faults on the fakes in a test of your own: SetFaultFunc loses
// the answer to the first request under every key, ScriptLookup makes the
// next lookup of Chift's log fail once, and Requests shows what the server
// saw. Each invoice still exists exactly once.
func Example_scriptingFaults() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault {
		if attempt == 1 {
			return saferetrytest.FaultDropAfterProcessing
		}
		return saferetrytest.FaultNone
	})
	srv.ScriptLookup(saferetrytest.FaultUnavailable)

	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(),
		saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond)) // short waits for the test
	if err != nil {
		log.Fatal(err)
	}
	const consumerID = "00000000-0000-4000-8000-000000000001"
	for _, number := range []string{"F-1", "F-2"} {
		created, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
			Path:         "consumers/" + consumerID + "/invoicing/invoices",
			Body:         map[string]any{"invoice_number": number, "total": 121},
			ConsumerID:   consumerID,
			ConnectionID: srv.ConnectionID,
			RequestID:    "invoice-" + number,
		})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s recovered=%v created=%d\n", created.RequestID, created.EntityID, created.Recovered, srv.CreatedWithKey(created.RequestID))
	}
	for _, r := range srv.Requests() {
		fmt.Printf("%-4s %-12s key=%-13s fault=%-11s status=%d\n", r.Method, path.Base(r.Path), r.Key, r.Fault, r.Status)
	}
	fmt.Println("invoices:", srv.Created())
	// Output:
	// invoice-F-1: inv_1 recovered=true created=1
	// invoice-F-2: inv_2 recovered=true created=1
	// POST invoices     key=invoice-F-1   fault=drop-after  status=0
	// POST invoices     key=invoice-F-1   fault=none        status=409
	// GET  transactions key=              fault=503         status=503
	// GET  transactions key=              fault=none        status=200
	// POST invoices     key=invoice-F-2   fault=drop-after  status=0
	// POST invoices     key=invoice-F-2   fault=none        status=409
	// GET  transactions key=              fault=none        status=200
	// invoices: 2
}
