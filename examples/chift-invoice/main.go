// Command chift-invoice creates invoices through Chift's invoicing API with
// saferetry's Client, and prints what every attempt did.
//
// Each invoice is created with client.Chift.Create, which retries what is
// safe to retry and, when the answer to a create that did happen is lost,
// reads the invoice's id from Chift's monitoring log itself: the caller gets
// an id either way and never writes that lookup.
//
// With no flags it starts saferetrytest's in-process fake of Chift on
// loopback, which demands a token as Chift does, and scripts one failure per
// invoice: a proxy's 502 HTML page, a 503, a 429 with Retry-After, a
// connection dropped before the server acted, one dropped after it acted, a
// response body cut off mid-way, and no failure at all. It then checks
// that every key created exactly one invoice and that the id each create
// returned is that invoice, and exits 1 otherwise, so the program is also a
// check. It needs no network and no environment.
//
// With -base-url it sends to that API instead (https://api.chift.eu for
// Chift). The credentials come from the environment: CHIFT_CLIENT_ID,
// CHIFT_CLIENT_SECRET, CHIFT_ACCOUNT_ID and optionally CHIFT_ENV_ID (traded
// for a token at POST /token; neither the secret nor the token is printed),
// plus CHIFT_CONSUMER_ID and CHIFT_CONNECTION_ID, the connection whose
// monitoring log tells the outcome of a create whose answer was lost.
//
//	go run ./examples/chift-invoice
//	go run ./examples/chift-invoice -n 9
//	CHIFT_CLIENT_ID=... CHIFT_CLIENT_SECRET=... CHIFT_ACCOUNT_ID=... \
//	CHIFT_CONSUMER_ID=... CHIFT_CONNECTION_ID=... \
//	go run ./examples/chift-invoice -base-url https://api.chift.eu -n 1
//
// The program is in internal/chiftinvoice, so that
// saferetryotel/examples/chift-invoice can run it with tracing (-spans).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/saferetry/saferetry-go/internal/chiftinvoice"
)

func main() {
	var cfg chiftinvoice.Config
	cfg.RegisterFlags(flag.CommandLine)
	flag.Parse()
	if err := chiftinvoice.Run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "chift-invoice:", err)
		os.Exit(1)
	}
}
