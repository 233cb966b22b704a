package saferetry

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// ErrRetryBudgetExhausted: a retry was due, but the Transport's retry
// budget was spent, so the request ended after fewer attempts. The last
// response, if there was one, is returned instead of this error.
var ErrRetryBudgetExhausted = errors.New("saferetry: retry budget exhausted")

// Retry budget defaults, after Finagle's: retries may add 20 % to the
// requests, plus 10 per second whatever the traffic, and a burst of 100
// saved for when traffic is low.
const (
	DefaultRetryRatio      = 0.2
	DefaultRetriesPerSec   = 10
	defaultRetryBurst      = 100
	milli                  = 1000
	maxBudgetRatio         = 10
	maxBudgetRetriesPerSec = 1e6
)

// retryBudget is shared by all requests of one Transport, so that a server
// that is down sees at most (1 + ratio) times the traffic, not (1 +
// retries) times. Every request deposits ratio tokens, every retry takes
// one, and minPerSec tokens accrue with time. Tokens are counted in
// thousandths in one atomic integer: no lock on the request path.
type retryBudget struct {
	depositMilli int64
	perSecMilli  int64
	capMilli     int64
	tokens       atomic.Int64 // thousandths of a retry
	refilled     atomic.Int64 // Unix nanoseconds of the last time-based refill
	now          func() time.Time
}

func newRetryBudget(ratio, perSec float64, now func() time.Time) *retryBudget {
	b := &retryBudget{
		depositMilli: int64(math.Round(ratio * milli)),
		perSecMilli:  int64(math.Round(perSec * milli)),
		capMilli:     defaultRetryBurst * milli,
		now:          now,
	}
	b.tokens.Store(b.capMilli)
	b.refilled.Store(now().UnixNano())
	return b
}

// WithRetryBudget sets the Transport's retry budget: retries may add ratio
// times the requests (0.2: at most 20 % more), plus perSecond retries each
// second. ratio is within [0, 10], perSecond within [0, 1e6]; outside, the
// option is refused with an error. Defaults: 0.2 and 10. When the budget
// is spent a request gets no further retry: its last response is
// returned, or an error matching ErrRetryBudgetExhausted.
func WithRetryBudget(ratio, perSecond float64) Option {
	return func(c *config) error {
		if !(ratio >= 0 && ratio <= maxBudgetRatio) || !(perSecond >= 0 && perSecond <= maxBudgetRetriesPerSec) {
			return fmt.Errorf("saferetry: WithRetryBudget: ratio %v must be within [0, %d] and perSecond %v within [0, %g]",
				ratio, maxBudgetRatio, perSecond, float64(maxBudgetRetriesPerSec))
		}
		c.budgetRatio, c.budgetPerSec, c.budgetOff = ratio, perSecond, false
		return nil
	}
}

// WithoutRetryBudget turns the retry budget off: every request may use all
// of its retries, whatever the others do.
func WithoutRetryBudget() Option {
	return func(c *config) error {
		c.budgetOff = true
		return nil
	}
}

// deposit credits one request.
func (b *retryBudget) deposit() {
	b.add(b.depositMilli)
}

// withdraw takes one retry's worth of tokens, if there is one.
// drawCreateRetry takes a retry from the budget for a Create's repost or
// lookup, and cancels the deposit the request it sends will earn: a
// create's extra requests are retries of it, for Chift and zerohash
// alike. false: the budget refused it.
func (t *Transport) drawCreateRetry() bool {
	b := t.budget
	if b == nil {
		return true
	}
	if !b.withdraw() {
		return false
	}
	b.add(-b.depositMilli)
	return true
}

func (b *retryBudget) withdraw() bool {
	b.refill()
	for {
		cur := b.tokens.Load()
		if cur < milli {
			return false
		}
		if b.tokens.CompareAndSwap(cur, cur-milli) {
			return true
		}
	}
}

// refill credits the per-second allowance for the time since the last
// refill; only the goroutine that moves the timestamp adds the tokens.
func (b *retryBudget) refill() {
	if b.perSecMilli == 0 {
		return
	}
	now := b.now().UnixNano()
	last := b.refilled.Load()
	elapsed := min(now-last, int64(24*time.Hour)) // keeps the product below from overflowing
	sec := int64(time.Second)
	earned := elapsed/sec*b.perSecMilli + elapsed%sec*b.perSecMilli/sec
	if earned <= 0 || !b.refilled.CompareAndSwap(last, now) {
		return
	}
	b.add(earned)
}

func (b *retryBudget) add(n int64) {
	for {
		cur := b.tokens.Load()
		next := min(cur+n, b.capMilli)
		if next == cur || b.tokens.CompareAndSwap(cur, next) {
			return
		}
	}
}
