package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/riverqueue/river/rivertype"
	"github.com/saferetry/saferetry-go/saferiver"
)

// row is a business row: its key and the id the job wrote into it.
type row struct {
	key string
	id  *string // nil while the create's job has not completed
}

// check compares what the application holds (business rows, jobs) with
// what the fakes record having created, and prints a summary. Any
// mismatch is an error.
func check[TTx any](ctx context.Context, out io.Writer, apis *fakes, db database[TTx], led *ledger, jobs []*rivertype.JobRow) error {
	fmt.Fprintln(out, "\n4. Check, from the fakes' own records")
	rows, err := readRows(ctx, db)
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, checkChift(out, apis, led, rows)...)
	errs = append(errs, checkZeroHash(ctx, out, apis, led, rows)...)
	errs = append(errs, checkRolledBack(out, apis, led, rows, jobs)...)
	errs = append(errs, checkJobs(out, led, jobs)...)
	if len(errs) > 0 {
		fmt.Fprintf(out, "\nFAILED: %d check(s):\n", len(errs))
		for _, err := range errs {
			fmt.Fprintln(out, "  ", err)
		}
		return fmt.Errorf("%d check(s) failed: %w", len(errs), errors.Join(errs...))
	}
	fmt.Fprintln(out, "\nOK: each committed create exists exactly once, the rolled-back ones do not exist, every business row holds its id")
	return nil
}

// readRows reads both business tables, by number.
func readRows[TTx any](ctx context.Context, db database[TTx]) (map[string]row, error) {
	rows := map[string]row{}
	err := db.Query(ctx, `SELECT number, request_id, entity_id FROM invoices`, func(scan func(...any) error) error {
		var number string
		var r row
		err := scan(&number, &r.key, &r.id)
		rows[number] = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading invoices: %w", err)
	}
	err = db.Query(ctx, `SELECT number, client_transfer_id, transfer_id FROM payouts`, func(scan func(...any) error) error {
		var number string
		var r row
		var id *int64
		err := scan(&number, &r.key, &id)
		if id != nil {
			s := fmt.Sprint(*id)
			r.id = &s
		}
		rows[number] = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading payouts: %w", err)
	}
	return rows, nil
}

func checkChift(out io.Writer, apis *fakes, led *ledger, rows map[string]row) []error {
	var counts, ids []error
	want := 0
	for _, e := range led.committed() {
		if e.api != chiftAPI {
			continue
		}
		want++
		if n := apis.chift.CreatedWithKey(e.key); n != 1 {
			counts = append(counts, fmt.Errorf("invoice %s: %d invoices at Chift under its key %s, want 1", e.number, n, e.key))
		}
		r, ok := rows[e.number]
		if !ok || r.id == nil {
			ids = append(ids, fmt.Errorf("invoice %s: no row, or no entity id in it", e.number))
			continue
		}
		if inv, found := apis.chift.Entity(*r.id); !found || inv.Key != e.key {
			ids = append(ids, fmt.Errorf("invoice %s holds entity id %s, which Chift did not create under its key %s", e.number, *r.id, e.key))
		}
	}
	got := apis.chift.Created()
	if got != want {
		counts = append(counts, fmt.Errorf("invoices: %d at Chift in all, for %d committed", got, want))
	}
	fmt.Fprintf(out, "   Chift:     %d invoices for %d committed keys, %s; each invoices row holds its invoice's id: %s\n",
		got, want, onePerKey(counts), yes(ids))
	return append(counts, ids...)
}

func checkZeroHash(ctx context.Context, out io.Writer, apis *fakes, led *ledger, rows map[string]row) []error {
	_, lookup, err := apis.endpoints().clients()
	if err != nil {
		return []error{err}
	}
	var counts, ids []error
	want := 0
	for _, e := range led.committed() {
		if e.api != zerohashAPI {
			continue
		}
		want++
		if n := apis.zerohash.CreatedWithClientTransferID(e.key); n != 1 {
			counts = append(counts, fmt.Errorf("payout %s: %d transfers at zerohash under its client_transfer_id %s, want 1", e.number, n, e.key))
		}
		r, ok := rows[e.number]
		if !ok || r.id == nil {
			ids = append(ids, fmt.Errorf("payout %s: no row, or no transfer id in it", e.number))
			continue
		}
		found, err := lookup.Transfers.FindByClientTransferID(ctx, e.key)
		switch {
		case err != nil:
			ids = append(ids, fmt.Errorf("payout %s: looking %s up at zerohash: %w", e.number, e.key, err))
		case fmt.Sprint(found.ID) != *r.id:
			ids = append(ids, fmt.Errorf("payout %s holds transfer id %s, zerohash's transfer under %s is %d", e.number, *r.id, e.key, found.ID))
		}
	}
	got := apis.zerohash.Created()
	if got != want {
		counts = append(counts, fmt.Errorf("payouts: %d transfers at zerohash in all, for %d committed", got, want))
	}
	fmt.Fprintf(out, "   zerohash:  %d transfers for %d committed keys, %s; each payouts row holds its transfer's id: %s\n",
		got, want, onePerKey(counts), yes(ids))
	return append(counts, ids...)
}

// checkRolledBack: a rolled-back create has no row, no job, and was
// never sent. Chift's request log shows every request's key; zerohash's
// shows its X-Request-Id, so there the check is that nothing was created
// under the client_transfer_id.
func checkRolledBack(out io.Writer, apis *fakes, led *ledger, rows map[string]row, jobs []*rivertype.JobRow) []error {
	jobKeys := map[string]bool{}
	for _, j := range jobs {
		jobKeys[keyOf(j)] = true
	}
	chiftKeys := map[string]bool{}
	for _, r := range apis.chift.Requests() {
		chiftKeys[r.Key] = true
	}
	var errs []error
	rolled := led.rolledBack()
	for _, e := range rolled {
		if _, ok := rows[e.number]; ok {
			errs = append(errs, fmt.Errorf("rolled-back %s has a row", e.number))
		}
		if jobKeys[e.key] {
			errs = append(errs, fmt.Errorf("rolled-back %s's key %s has a job", e.number, e.key))
		}
		if chiftKeys[e.key] || apis.createdWith(e.api, e.key) != 0 {
			errs = append(errs, fmt.Errorf("rolled-back %s's key %s reached %s", e.number, e.key, e.api))
		}
	}
	fmt.Fprintf(out, "   rolled back: %d keys; none sent to Chift nor created at zerohash, no job, no row: %s\n", len(rolled), yes(errs))
	return errs
}

// checkJobs: every committed create's job completed; it tallies the
// outcomes the jobs recorded.
func checkJobs(out io.Writer, led *ledger, jobs []*rivertype.JobRow) []error {
	var errs []error
	if len(jobs) != len(led.byJob) {
		errs = append(errs, fmt.Errorf("%d jobs for %d committed creates", len(jobs), len(led.byJob)))
	}
	outcomes := map[string]int{}
	completed, again := 0, 0
	for _, j := range jobs {
		e, ok := led.byJob[j.ID]
		if !ok || e.key != keyOf(j) {
			errs = append(errs, fmt.Errorf("job %d (%s) is none of the committed creates", j.ID, keyOf(j)))
			continue
		}
		output := outputOf(j)
		if j.State != rivertype.JobStateCompleted {
			errs = append(errs, fmt.Errorf("job %d of %s is %s: %s", j.ID, e.number, j.State, output.Error))
			continue
		}
		completed++
		outcomes[output.Outcome]++
		if j.Attempt > 1 {
			again++
		}
	}
	fmt.Fprintf(out, "   jobs: %d completed (%s), %d of them in more than one attempt\n",
		completed, describeOutcomes(outcomes), again)
	return errs
}

// outputOf is the saferiver.Output a job recorded in its metadata.
func outputOf(j *rivertype.JobRow) saferiver.Output {
	var meta struct {
		Output saferiver.Output `json:"output"`
	}
	_ = json.Unmarshal(j.Metadata, &meta)
	return meta.Output
}

// describeOutcomes lists outcome counts: "created 3, recovered 1".
func describeOutcomes(tally map[string]int) string {
	var parts []string
	for _, o := range slices.Sorted(maps.Keys(tally)) {
		name := o
		if name == "" {
			name = "(none recorded)"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, tally[o]))
	}
	return strings.Join(parts, ", ")
}

// keyOf is the idempotency key in a job's args.
func keyOf(j *rivertype.JobRow) string {
	var args struct {
		RequestID        string `json:"request_id"`
		ClientTransferID string `json:"client_transfer_id"`
	}
	_ = json.Unmarshal(j.EncodedArgs, &args)
	return args.RequestID + args.ClientTransferID
}

func onePerKey(errs []error) string {
	if len(errs) == 0 {
		return "exactly 1 per key"
	}
	return "NOT 1 per key"
}

func yes(errs []error) string {
	if len(errs) == 0 {
		return "yes"
	}
	return "NO"
}
