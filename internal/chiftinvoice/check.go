package chiftinvoice

import (
	"errors"
	"fmt"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// check reports the failures that make the run a failed check: a create
// that ended in an error or without an invoice id and, against the fake, a
// key that did not create exactly one invoice or an id that is not its
// invoice.
func check(server *saferetrytest.ChiftServer, plan []planned, outcomes []outcome) error {
	var errs []error
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			errs = append(errs, fmt.Errorf("%s failed: %w", o.number, o.err))
		case o.created.EntityID == "":
			errs = append(errs, fmt.Errorf("%s: the create returned no invoice id", o.number))
		}
	}
	if server != nil {
		errs = append(errs, checkServer(server, plan, outcomes)...)
	}
	return errors.Join(errs...)
}

// checkServer asks the fake, which counts what it created, whether every
// key created exactly one invoice, whether the id each create returned is
// that invoice, and whether nothing else was created.
func checkServer(server *saferetrytest.ChiftServer, plan []planned, outcomes []outcome) []error {
	fmt.Println("\nServer's own records")
	var errs []error
	for i, p := range plan {
		if err := checkKey(server, p.key, outcomes[i]); err != nil {
			errs = append(errs, err)
		}
	}
	total := server.Created()
	fmt.Printf("  total created %d for %d invoices\n", total, len(plan))
	if total != len(plan) {
		errs = append(errs, fmt.Errorf("the server created %d invoices for %d requested", total, len(plan)))
	}
	// One token serves every create and lookup: the SDK caches it.
	fmt.Printf("  tokens issued %d\n", server.TokensIssued())
	if len(errs) == 0 {
		fmt.Println("OK: every invoice exists exactly once, and every create returned its id")
	}
	return errs
}

func checkKey(server *saferetrytest.ChiftServer, key string, o outcome) error {
	n := server.CreatedWithKey(key)
	id := ""
	if o.created != nil {
		id = o.created.EntityID
	}
	entity, found := server.Entity(id)
	fmt.Printf("  key %s  created %d  id %s is its invoice: %t\n", key, n, orNone(id), found && entity.Key == key)
	switch {
	case n != 1:
		return fmt.Errorf("key %s created %d invoices, want 1", key, n)
	case id != "" && (!found || entity.Key != key):
		return fmt.Errorf("key %s: the create returned id %s, which is not the invoice that key created", key, id)
	}
	return nil
}

func orNone(id string) string {
	if id == "" {
		return "(none)"
	}
	return id
}
