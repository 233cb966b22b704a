package chiftinvoice

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// printAttempt is the observer: one line per attempt, printed as it ends.
// It sees the creates and the monitoring lookups Create makes after a lost
// answer; token requests do not pass through the retrying transport.
func printAttempt(a saferetry.Attempt) {
	fmt.Printf("    %-6s attempt %d: %-40s %s\n", kindOf(a), a.Number, attemptResult(a), nextStep(a))
}

func kindOf(a saferetry.Attempt) string {
	if a.Method == http.MethodGet && strings.Contains(a.URL, "/transactions?") {
		return "lookup"
	}
	return "create"
}

func attemptResult(a saferetry.Attempt) string {
	if a.Err == nil {
		// Code tells a 409 that means "already done" from a business
		// conflict such as a reused invoice number.
		return strings.TrimSpace(fmt.Sprintf("%d %s %s", a.StatusCode, http.StatusText(a.StatusCode), a.Code))
	}
	// The URL is the same on every line; keep only the cause.
	err := a.Err
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	if a.Sent {
		return fmt.Sprintf("error %q after sending", err)
	}
	return fmt.Sprintf("error %q, not sent", err)
}

// nextStep prints backoff waits without their length: they are jittered,
// and printing them would change the trace from run to run. A wait longer
// than maxBackoff was set by Retry-After and is exact.
func nextStep(a saferetry.Attempt) string {
	switch {
	case a.BudgetExhausted:
		return "-> stop: retry budget spent"
	case !a.Retry:
		return "-> stop"
	case a.Wait > maxBackoff:
		return "-> retry in " + a.Wait.Round(100*time.Millisecond).String() + ", as Retry-After asks"
	}
	return "-> retry after a short backoff"
}

func printSummary(outcomes []outcome) {
	fmt.Println("\nSummary")
	for _, o := range outcomes {
		fmt.Printf("  %s  %s\n", o.number, describe(o))
	}
}

func describe(o outcome) string {
	switch {
	case o.err != nil:
		return "error: " + o.err.Error()
	case o.created.Recovered:
		// The answer was lost; Create read the outcome from the log by key.
		return fmt.Sprintf("recovered from Chift's log: invoice %s (original status %d)", o.created.EntityID, o.created.StatusCode)
	}
	return fmt.Sprintf("created: invoice %s (status %d)", o.created.EntityID, o.created.StatusCode)
}
