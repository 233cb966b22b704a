package matrix

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
)

// Kinds of violation, each a broken promise of the SDK (or of a cell's
// setup, for stray requests).
const (
	kindTwice       = "processed twice"
	kindLost        = "lost"
	kindUntyped     = "error after a possible send does not match ErrOutcomeUnknown"
	kindWrongKey    = "KeyFromError is not the key the server saw"
	kindKeyChanged  = "key changed between attempts"
	kindBodyClose   = "request body not closed exactly once"
	kindRewoundLeak = "a body GetBody handed out was never closed"
	kindCorrupt     = "a complete request arrived with the wrong body"
	kindRefused     = "the server refused the credentials"
	kindWrongAnswer = "a 2xx answer names another operation"
	kindHung        = "call did not return"
	kindStray       = "stray request"
)

var allKinds = []string{kindTwice, kindLost, kindUntyped, kindWrongKey, kindKeyChanged, kindBodyClose,
	kindRewoundLeak, kindCorrupt, kindRefused, kindWrongAnswer, kindHung, kindStray}

const shownViolations = 5

type violation struct{ kind, text string }

// tally is one cell's outcome. Every operation ends ok (2xx), typed
// (ErrRequestAlreadyProcessed or ErrRequestInProcess: the request exists),
// unknown (ErrOutcomeUnknown) or failed (any other error or status).
type tally struct {
	cell                            cell
	ops, ok, typed, unknown, failed int
	attempts                        int // attempts the server saw, token requests aside
	count                           map[string]int
	first                           []violation
	faults                          map[string]int
}

func judge(c cell, api *fakeAPI, ops []*opRecord, stuck bool) *tally {
	tl := &tally{cell: c, count: map[string]int{}, faults: map[string]int{}}
	for _, op := range ops {
		outcome, vs := op.judge()
		tl.ops++
		switch outcome {
		case "ok":
			tl.ok++
		case "typed":
			tl.typed++
		case "unknown":
			tl.unknown++
		default:
			tl.failed++
		}
		op.mu.Lock()
		tl.attempts += len(op.arrivals)
		for _, at := range op.arrivals {
			tl.faults[at.fault.String()]++
		}
		op.mu.Unlock()
		for _, v := range vs {
			tl.add(v)
		}
	}
	if stuck {
		tl.add(violation{kindHung, fmt.Sprintf("no call returned for %v: the server's connections were closed to free the callers", watchdog)})
	}
	api.mu.Lock()
	for _, s := range api.strays {
		tl.add(violation{kindStray, s})
	}
	api.mu.Unlock()
	return tl
}

func (tl *tally) add(v violation) {
	tl.count[v.kind]++
	if len(tl.first) < shownViolations {
		tl.first = append(tl.first, v)
	}
}

// judge checks one operation against the server's record of it.
func (op *opRecord) judge() (outcome string, vs []violation) {
	op.mu.Lock()
	defer op.mu.Unlock()
	got := op.got
	success := got.returned && got.err == nil && got.status/100 == 2
	unknown := errors.Is(got.err, saferetry.ErrOutcomeUnknown)
	// The caller holds the server's word that the request exists (processed,
	// or in process): a typed error, or the 409 only the deduplicating
	// servers send, for a key they know, handed back as the response.
	typed := errors.Is(got.err, saferetry.ErrRequestAlreadyProcessed) || errors.Is(got.err, saferetry.ErrRequestInProcess) ||
		(got.returned && got.err == nil && got.status == http.StatusConflict)
	serverKey, maySent := "", op.processed > 0
	for _, at := range op.arrivals {
		if serverKey == "" {
			serverKey = at.key
		}
		maySent = maySent || !at.fault.spec().definite
	}
	say := func(kind, format string, args ...any) {
		vs = append(vs, violation{kind, op.describe() + ": " + fmt.Sprintf(format, args...)})
	}

	if !got.returned {
		say(kindHung, "still running when no call of the cell had returned for %v (and 10 s after the server closed its connections)", watchdog)
	}
	if op.processed > 1 {
		say(kindTwice, "processed %d times", op.processed)
	}
	switch {
	case !got.returned:
	case success && op.processed == 0:
		say(kindLost, "the caller was told %d, the payload was never processed", got.status)
	case op.processed == 1 && got.err == nil && !success && !typed:
		say(kindLost, "processed, the caller was handed an HTTP %d response (no error) as the outcome", got.status)
	case op.processed == 1 && !success && !unknown && !typed:
		say(kindLost, "processed, the caller got an error that neither says the outcome is unknown nor that it was processed")
	case got.err != nil && maySent && !unknown && !typed:
		say(kindUntyped, "an attempt reached the server and left the outcome open")
	}
	if got.err != nil && maySent {
		if k := saferetry.KeyFromError(got.err); k != serverKey {
			say(kindWrongKey, "KeyFromError=%q, the server saw %q", k, serverKey)
		}
	}
	for _, at := range op.arrivals {
		if at.key != serverKey || at.key == "" || strings.Contains(at.key, ",") {
			say(kindKeyChanged, "keys seen: %s", op.keys())
			break
		}
	}
	for i, b := range op.bodies {
		switch n := b.closes.Load(); {
		case n == 0 && b.fromGetBody:
			say(kindRewoundLeak, "body %d of %d, from GetBody called by %s, never closed", i+1, len(op.bodies), b.obtainedBy)
		case n != 1 && b.fromGetBody:
			say(kindBodyClose, "body %d of %d, from GetBody called by %s, closed %d times", i+1, len(op.bodies), b.obtainedBy, n)
		case n != 1:
			say(kindBodyClose, "the request's own body closed %d times", n)
		}
	}
	if op.corrupt > 0 {
		say(kindCorrupt, "%d complete request(s) with a body that was not the payload", op.corrupt)
	}
	if op.refused > 0 {
		say(kindRefused, "%d attempt(s) refused", op.refused)
	}
	if success && got.answerOp != "" && got.answerOp != op.id {
		say(kindWrongAnswer, "the answer names %s", got.answerOp)
	}

	switch {
	case success:
		return "ok", vs
	case typed:
		return "typed", vs
	case unknown:
		return "unknown", vs
	}
	return "failed", vs
}

// describe: the operation, the faults its attempts met and what the server
// did with each, what the caller got, how many times it was processed.
// Called with op.mu held.
func (op *opRecord) describe() string {
	var attempts []string
	for _, at := range op.arrivals {
		attempts = append(attempts, at.fault.String()+"→"+at.result)
	}
	return fmt.Sprintf("%s attempts [%s] caller got %s; processed %d", op.id, strings.Join(attempts, ", "), op.got, op.processed)
}

func (op *opRecord) keys() string {
	var keys []string
	for _, at := range op.arrivals {
		if !slices.Contains(keys, at.key) {
			keys = append(keys, fmt.Sprintf("%q", at.key))
		}
	}
	return strings.Join(keys, " ")
}

func (r result) String() string {
	switch {
	case !r.returned:
		return "nothing (the call did not return)"
	case r.err != nil:
		msg := r.err.Error()
		if len(msg) > 240 {
			msg = msg[:240] + "…"
		}
		return fmt.Sprintf("error %q (ErrOutcomeUnknown: %v, key %q)", msg, errors.Is(r.err, saferetry.ErrOutcomeUnknown), saferetry.KeyFromError(r.err))
	}
	return fmt.Sprintf("HTTP %d", r.status)
}

func perOp(n, ops int) float64 {
	if ops == 0 {
		return 0
	}
	return float64(n) / float64(ops)
}

// report prints the cell's summary line and fails the cell with its first
// violations.
func (tl *tally) report(t *testing.T) {
	t.Helper()
	others := 0
	for k, n := range tl.count {
		if k != kindTwice && k != kindLost {
			others += n
		}
	}
	line := fmt.Sprintf("matrix %s: ops=%d processed_twice=%d lost=%d unknown=%d failed=%d attempts_per_op=%.2f ok=%d typed=%d other_violations=%d",
		tl.cell, tl.ops, tl.count[kindTwice], tl.count[kindLost], tl.unknown, tl.failed, perOp(tl.attempts, tl.ops), tl.ok, tl.typed, others)
	fmt.Println(line)
	t.Log(line)
	t.Logf("faults met: %v", tl.faults)
	if len(tl.count) == 0 {
		return
	}
	var b strings.Builder
	for _, k := range allKinds {
		if n := tl.count[k]; n > 0 {
			fmt.Fprintf(&b, "\n  %d × %s", n, k)
		}
	}
	b.WriteString("\n  first ones:")
	for _, v := range tl.first {
		fmt.Fprintf(&b, "\n  [%s] %s", v.kind, v.text)
	}
	t.Errorf("%s: violations:%s", tl.cell, b.String())
}
