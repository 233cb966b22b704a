package saferiver

import (
	"context"
	"errors"
	"fmt"
	"github.com/riverqueue/river/rivertype"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

func TestJudge(t *testing.T) {
	api := func(status int) *saferetry.APIError { return &saferetry.APIError{StatusCode: status} }
	unknown := func(err error) error { return &saferetry.OutcomeError{Key: "k", Reason: "r", Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		want verdict
	}{
		{"outcome unknown", unknown(nil), retryLater},
		{"outcome unknown after a 422 to a repost", unknown(api(422)), retryLater},
		{"key expired", unknown(saferetry.ErrKeyExpired), reconcileJob},
		{"key expired, wrapped", fmt.Errorf("x: %w", unknown(fmt.Errorf("%w; last: %w", saferetry.ErrKeyExpired, api(500)))), reconcileJob},
		{"transfer of other fields under the id", &saferetry.TransferMismatchError{ClientTransferID: "k"}, rejectJob},
		{"transfer under the id may not be ours", &saferetry.TransferMismatchError{ClientTransferID: "k", MaybeCreated: true}, reconcileJob},
		{"Chift id used by another route", &saferetry.ChiftRequestIDReusedError{RequestID: "k", Logged: &saferetry.Transaction{}}, rejectJob},
		{"Chift id spent by a 422", &saferetry.ChiftRequestIDSpentError{RequestID: "k", OriginalStatus: 422, Err: api(409)}, rejectJob},
		{"Chift id spent by a 500", unknown(&saferetry.ChiftRequestIDSpentError{RequestID: "k", OriginalStatus: 500, Err: api(409)}), reconcileJob},
		{"422 validation", api(422), rejectJob},
		{"409 business conflict", api(409), rejectJob},
		{"400", api(400), rejectJob},
		{"401", api(401), retryLater},
		{"403", api(403), retryLater},
		{"408", api(408), retryLater},
		{"429", api(429), retryLater},
		{"500", api(500), retryLater},
		{"503", api(503), retryLater},
		{"rate limited, not created", &saferetry.NotCreatedError{ClientTransferID: "k", Err: api(429)}, retryLater},
		{"invalid key", fmt.Errorf("x: %w", saferetry.ErrInvalidKey), rejectJob},
		{"context ended", context.DeadlineExceeded, retryLater},
		{"connection refused", errors.New("dial tcp: connection refused"), retryLater},
	} {
		if got, _ := judge(tc.err); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestInsertedAtReadsTheJobsAgeOnTheDatabasesClock(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	for _, tc := range []struct {
		name string
		job  rivertype.JobRow
		want time.Time
	}{
		{"clocks agree", rivertype.JobRow{Attempt: 2, CreatedAt: now.Add(-time.Hour), AttemptedAt: at(0)}, now.Add(-time.Hour - time.Second)},
		{"database 10 min ahead", rivertype.JobRow{Attempt: 2, CreatedAt: now.Add(10*time.Minute - time.Hour), AttemptedAt: at(10 * time.Minute)},
			now.Add(-time.Hour - time.Second)},
		{"database 10 min behind", rivertype.JobRow{Attempt: 3, CreatedAt: now.Add(-10*time.Minute - time.Hour), AttemptedAt: at(-10 * time.Minute)},
			now.Add(-time.Hour - time.Second)},
		{"stamps out of order", rivertype.JobRow{Attempt: 2, CreatedAt: now.Add(time.Minute), AttemptedAt: at(0)}, now.Add(-time.Second)},
		{"no attempted_at", rivertype.JobRow{Attempt: 2, CreatedAt: now.Add(-time.Hour)}, now.Add(-time.Hour - time.Second)},
	} {
		if got := insertedAt(&tc.job, now); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
