package matrix

import (
	"cmp"
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
	kindWrongKey    = "KeyFromError (or RequestIDFromError) is not the key the server saw"
	kindKeyChanged  = "key changed between attempts"
	kindBodyClose   = "request body not closed exactly once"
	kindRewoundLeak = "a body GetBody handed out was never closed"
	kindCorrupt     = "a complete request arrived with the wrong body"
	kindRefused     = "the server refused the credentials"
	kindWrongAnswer = "a 2xx answer names another operation"
	kindHung        = "call did not return"
	kindStray       = "stray request"
	kindConfig      = "saferetry refused the cell's configuration"
)

var allKinds = []string{kindTwice, kindLost, kindUntyped, kindWrongKey, kindKeyChanged, kindBodyClose,
	kindRewoundLeak, kindCorrupt, kindRefused, kindWrongAnswer, kindHung, kindStray, kindConfig}

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
	j := newJudgement(op)
	j.checkOutcome()
	j.checkKey()
	j.checkBodies()
	j.checkServerSide()
	return j.outcome(), j.vs
}

// judgement is one operation's facts, read under its lock, and the
// violations found in them.
type judgement struct {
	op                      *opRecord
	got                     result
	success, unknown, typed bool
	maySent                 bool   // processed, or an attempt met a fault that left the client unsure
	serverKey               string // the key of the first attempt the server saw
	vs                      []violation
}

func newJudgement(op *opRecord) *judgement {
	got := op.got
	j := &judgement{
		op: op, got: got,
		success: got.returned && got.err == nil && got.status/100 == 2,
		unknown: errors.Is(got.err, saferetry.ErrOutcomeUnknown),
		// The caller holds the server's word that the request exists
		// (processed, or in process): a typed error, or the 409 only the
		// deduplicating servers send, for a key they know, handed back as
		// the response.
		typed: errors.Is(got.err, saferetry.ErrRequestAlreadyProcessed) || errors.Is(got.err, saferetry.ErrRequestInProcess) ||
			(got.returned && got.err == nil && got.status == http.StatusConflict),
		maySent: op.processed > 0,
	}
	for _, at := range op.arrivals {
		if j.serverKey == "" {
			j.serverKey = at.key
		}
		j.maySent = j.maySent || !at.fault.spec().definite
	}
	return j
}

func (j *judgement) say(kind, format string, args ...any) {
	j.vs = append(j.vs, violation{kind, j.op.describe() + ": " + fmt.Sprintf(format, args...)})
}

// checkOutcome: never twice; a success processed once; a processed
// operation not reported as failed; an error after a possible send that
// says the outcome is unknown.
func (j *judgement) checkOutcome() {
	processed, got := j.op.processed, j.got
	if processed > 1 {
		j.say(kindTwice, "processed %d times", processed)
	}
	switch {
	case !got.returned:
		j.say(kindHung, "still running when no call of the cell had returned for %v (and 10 s after the server closed its connections)", watchdog)
	case j.success && processed == 0:
		j.say(kindLost, "the caller was told %d, the payload was never processed", got.status)
	case j.success && got.answerOp != "" && got.answerOp != j.op.id:
		j.say(kindWrongAnswer, "the answer names %s", got.answerOp)
	case j.success || j.typed || j.unknown:
	case processed == 1 && got.err == nil:
		j.say(kindLost, "processed, the caller was handed an HTTP %d response (no error) as the outcome", got.status)
	case processed == 1:
		j.say(kindLost, "processed, the caller got an error that neither says the outcome is unknown nor that it was processed")
	case got.err != nil && j.maySent:
		j.say(kindUntyped, "an attempt reached the server and left the outcome open")
	}
}

// checkKey: one key on every attempt, and the error carries it: as the
// idempotency key (KeyFromError), or, under zerohash, whose X-REQUEST-ID
// is not deduplicated on, as the request id (RequestIDFromError); never
// both.
func (j *judgement) checkKey() {
	if j.got.err != nil && j.maySent {
		key, requestID := saferetry.KeyFromError(j.got.err), saferetry.RequestIDFromError(j.got.err)
		if cmp.Or(key, requestID) != j.serverKey || (key != "" && requestID != "") {
			j.say(kindWrongKey, "KeyFromError=%q, RequestIDFromError=%q, the server saw %q", key, requestID, j.serverKey)
		}
	}
	for _, at := range j.op.arrivals {
		if at.key != j.serverKey || at.key == "" || strings.Contains(at.key, ",") {
			j.say(kindKeyChanged, "keys seen: %s", j.op.keys())
			return
		}
	}
}

// checkBodies: the request's body and every body GetBody handed out
// closed exactly once.
func (j *judgement) checkBodies() {
	for i, b := range j.op.bodies {
		switch n := b.closes.Load(); {
		case n == 0 && b.fromGetBody:
			j.say(kindRewoundLeak, "body %d of %d, from GetBody called by %s, never closed", i+1, len(j.op.bodies), b.obtainedBy)
		case n != 1 && b.fromGetBody:
			j.say(kindBodyClose, "body %d of %d, from GetBody called by %s, closed %d times", i+1, len(j.op.bodies), b.obtainedBy, n)
		case n != 1:
			j.say(kindBodyClose, "the request's own body closed %d times", n)
		}
	}
}

// checkServerSide: what only the server could see went wrong.
func (j *judgement) checkServerSide() {
	if j.op.corrupt > 0 {
		j.say(kindCorrupt, "%d complete request(s) with a body that was not the payload", j.op.corrupt)
	}
	if j.op.refused > 0 {
		j.say(kindRefused, "%d attempt(s) refused", j.op.refused)
	}
}

func (j *judgement) outcome() string {
	switch {
	case j.success:
		return "ok"
	case j.typed:
		return "typed"
	case j.unknown:
		return "unknown"
	}
	return "failed"
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
	if r.readErr != nil {
		return fmt.Sprintf("HTTP %d (reading the answer: %v)", r.status, r.readErr)
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
