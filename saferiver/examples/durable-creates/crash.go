package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// pollEvery is how often the parent reads the job table.
const pollEvery = 10 * time.Millisecond

// listJobs reads the job table through River.
func listJobs[TTx any](ctx context.Context, client *river.Client[TTx]) ([]*rivertype.JobRow, error) {
	res, err := client.JobList(ctx, river.NewJobListParams().First(maxCreates))
	if err != nil {
		return nil, fmt.Errorf("listing the jobs: %w", err)
	}
	return res.Jobs, nil
}

// tally counts jobs by state.
type tally map[rivertype.JobState]int

func tallyOf(jobs []*rivertype.JobRow) tally {
	t := tally{}
	for _, j := range jobs {
		t[j.State]++
	}
	return t
}

func (t tally) final() int {
	n := 0
	for state, count := range t {
		if isFinal(state) {
			n += count
		}
	}
	return n
}

// crash is the job table as the killed worker left it.
type crash struct {
	at   time.Time
	held map[int64]int // the jobs it left running: their attempt
}

// killMidFlight polls the job table while worker w runs, and kills w
// once a quarter of the jobs are completed and a running one has already
// been created at the API (the answer, or the job's completion, not yet
// in the database: the moment a crash costs most), or once half are
// completed with some still running.
func killMidFlight[TTx any](ctx context.Context, out io.Writer, client *river.Client[TTx], apis *fakes, led *ledger, w *workerProcess) (*crash, error) {
	total := len(led.committed())
	fmt.Fprintf(out, "\n2. Worker 1 (pid %d) started; it is killed with SIGKILL as soon as the job table shows it mid-flight\n", w.pid())
	started := time.Now()
	for {
		if err := w.exitedEarly(); err != nil {
			return nil, err
		}
		jobs, err := listJobs(ctx, client)
		if err != nil {
			return nil, err
		}
		t := tallyOf(jobs)
		done, running := t[rivertype.JobStateCompleted], t[rivertype.JobStateRunning]
		if t.final() == total {
			return nil, errors.New("worker 1 finished every job before it could be killed, so the crash was not shown: try a larger -n")
		}
		if running > 0 && (done >= total/4 && createdRunning(jobs, led, apis) > 0 || done >= total/2) {
			break
		}
		if time.Since(started) > 30*time.Second {
			return nil, fmt.Errorf("worker 1 did not get a quarter of the jobs done within 30 s (%d of %d)%s", done, total, w.tail())
		}
		time.Sleep(pollEvery)
	}
	if err := w.kill(); err != nil {
		return nil, err
	}
	c := &crash{at: time.Now(), held: map[int64]int{}}
	jobs, err := listJobs(ctx, client)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.State == rivertype.JobStateRunning {
			c.held[j.ID] = j.Attempt
		}
	}
	t := tallyOf(jobs)
	fmt.Fprintf(out, "   killed after %.1f s: %s completed, %d running, %d not started\n",
		c.at.Sub(started).Seconds(), plural(t[rivertype.JobStateCompleted], "job"), len(c.held), total-t.final()-len(c.held))
	fmt.Fprintf(out, "   the running ones keep that state in the job table; the APIs already hold %d of their entities,\n"+
		"   and requests worker 1 sent before it died may still create more\n", createdRunning(jobs, led, apis))
	return c, nil
}

// createdRunning counts the running jobs whose create the API has made.
func createdRunning(jobs []*rivertype.JobRow, led *ledger, apis *fakes) int {
	n := 0
	for _, j := range jobs {
		if e, ok := led.byJob[j.ID]; ok && j.State == rivertype.JobStateRunning && apis.createdWith(e.api, e.key) > 0 {
			n++
		}
	}
	return n
}

// rescued: none of the jobs the dead worker held is still running its
// attempt.
func (c *crash) rescued(jobs []*rivertype.JobRow) bool {
	for _, j := range jobs {
		if attempt, held := c.held[j.ID]; held && j.State == rivertype.JobStateRunning && j.Attempt == attempt {
			return false
		}
	}
	return true
}

// waitFinal polls the job table until every job is final, saying when
// River rescued the dead worker's jobs.
func waitFinal[TTx any](ctx context.Context, out io.Writer, client *river.Client[TTx], led *ledger, c *crash, w *workerProcess) ([]*rivertype.JobRow, error) {
	total := len(led.committed())
	fmt.Fprintf(out, "\n3. Worker 2 (pid %d) started: it works the jobs nobody started at once, and the %s left running once River rescues them\n",
		w.pid(), plural(len(c.held), "job"))
	fmt.Fprintln(out, "   (River's rescuer runs on the leader: worker 2 becomes leader when worker 1's lease lapses)")
	rescued, others := false, false
	for {
		if err := w.exitedEarly(); err != nil {
			return nil, err
		}
		jobs, err := listJobs(ctx, client)
		if err != nil {
			return nil, err
		}
		if !others && c.othersFinal(jobs) {
			others = true
			fmt.Fprintf(out, "   the other jobs final %.1f s after the kill; waiting for the rescue of the %s worker 1 held\n", time.Since(c.at).Seconds(), plural(len(c.held), "job"))
		}
		if !rescued && c.rescued(jobs) {
			rescued = true
			fmt.Fprintf(out, "   rescued the %s worker 1 held, %.1f s after the kill\n", plural(len(c.held), "job"), time.Since(c.at).Seconds())
		}
		if tallyOf(jobs).final() == total {
			fmt.Fprintf(out, "   every job final %.1f s after the kill\n", time.Since(c.at).Seconds())
			fmt.Fprintf(out, "   the %s worker 1 held: %s (recovered: the API had it, its id was read back)\n", plural(len(c.held), "job"), c.outcomes(jobs))
			return jobs, nil
		}
		if time.Since(c.at) > 90*time.Second {
			t := tallyOf(jobs)
			return nil, fmt.Errorf("90 s after the kill, %d of %d jobs are final (%d running, %d retryable, %d available)%s",
				t.final(), total, t[rivertype.JobStateRunning], t[rivertype.JobStateRetryable], t[rivertype.JobStateAvailable], w.tail())
		}
		time.Sleep(5 * pollEvery)
	}
}

// othersFinal: every job but those the dead worker held is final.
func (c *crash) othersFinal(jobs []*rivertype.JobRow) bool {
	for _, j := range jobs {
		if _, held := c.held[j.ID]; !held && !isFinal(j.State) {
			return false
		}
	}
	return true
}

func isFinal(s rivertype.JobState) bool {
	return s == rivertype.JobStateCompleted || s == rivertype.JobStateCancelled || s == rivertype.JobStateDiscarded
}

// outcomes tallies the outcomes the held jobs recorded once final.
func (c *crash) outcomes(jobs []*rivertype.JobRow) string {
	tally := map[string]int{}
	for _, j := range jobs {
		if _, held := c.held[j.ID]; held {
			tally[outputOf(j).Outcome]++
		}
	}
	return describeOutcomes(tally)
}

// plural is "1 job", "2 jobs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
