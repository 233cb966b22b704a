package main

import (
	"context"
	"time"

	"github.com/google/uuid"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

type transferRow struct {
	fault              saferetrytest.Fault
	creates            int
	extra              float64 // HTTP requests beyond the one POST, per create
	recovered, reposts int     // outcomes of Create
	exactlyOnce        int     // creates whose id holds exactly one transfer
	errors             int
}

// ambiguousFaults are the answers to POST /transfers that leave the
// client not knowing whether the transfer exists.
var ambiguousFaults = []saferetrytest.Fault{
	saferetrytest.FaultDropAfterProcessing,
	saferetrytest.FaultDropBeforeProcessing,
	saferetrytest.FaultBadGateway,
}

// runTransfers makes the first POST of every Transfers.Create ambiguous
// and counts what resolving it costs in requests, on the zerohash fake.
// The retry budget is off: every create failing first is an outage to it,
// and it would refuse the lookups and reposts once its burst is spent
// (runCreateOutage measures that).
func runTransfers(cfg config) []transferRow {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase), saferetry.WithoutRetryBudget())
	if err != nil {
		panic(err)
	}
	var rows []transferRow
	for _, f := range ambiguousFaults {
		row := transferRow{fault: f, creates: cfg.transfersPerFault}
		for range cfg.transfersPerFault {
			createOne(srv, client, f, &row)
		}
		row.extra /= float64(row.creates)
		rows = append(rows, row)
	}
	return rows
}

// createOne scripts the fault for the next POST and runs one Create; the
// server's request log tells how many requests it took.
func createOne(srv *saferetrytest.ZeroHashServer, client *saferetry.Client, f saferetrytest.Fault, row *transferRow) {
	id := uuid.NewString()
	before := len(srv.Requests())
	srv.Script(f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := client.Transfers.Create(ctx, saferetry.TransferRequest{
		ClientTransferID:    id,
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "20.10",
	})
	row.extra += float64(len(srv.Requests()) - before - 1)
	switch {
	case err != nil:
		row.errors++
	case tr.Outcome == saferetry.OutcomeRecovered:
		row.recovered++
	case tr.Outcome == saferetry.OutcomeReposted:
		row.reposts++
	}
	if srv.CreatedWithClientTransferID(id) == 1 {
		row.exactlyOnce++
	}
}
