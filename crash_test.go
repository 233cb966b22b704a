package saferetry_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The child starts crashN creates, crashWorkers at a time.
const (
	crashN       = 20
	crashWorkers = 8
)

// crashTarget is one API under the crash test: the server, as the test
// process sees it.
type crashTarget struct {
	api      string
	url      string
	env      []string            // the child's credentials
	posts    func() int          // create requests the server received
	created  func() int          // entities created in total
	countFor func(string) int    // entities created under one key ("" for none)
	entity   func(string) string // the server's entity id for a key, "" if none
	hold     *crashHold
}

// crashHold holds every first attempt of a key at the server, with the key
// in process, until the test lets it go: the first crashWorkers (one per
// worker) together once all of them are held, the later ones once the
// child is dead. The kill then finds creates done and creates in flight,
// however fast the machine. Later attempts are not held.
type crashHold struct {
	mu              sync.Mutex
	held            int
	first, rest     chan struct{}
	openFirst, open sync.Once
}

func newCrashHold() *crashHold {
	return &crashHold{first: make(chan struct{}), rest: make(chan struct{})}
}

// fault is the servers' fault func: it holds, and injects nothing.
func (h *crashHold) fault(_ string, attempt int) saferetrytest.Fault {
	if attempt == 1 {
		h.mu.Lock()
		h.held++
		gate := h.rest
		if h.held <= crashWorkers {
			gate = h.first
		}
		h.mu.Unlock()
		<-gate
	}
	return saferetrytest.FaultNone
}

func (h *crashHold) heldCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

func (h *crashHold) releaseFirst() { h.openFirst.Do(func() { close(h.first) }) }

// releaseAll lets every held attempt go, and every later one pass.
func (h *crashHold) releaseAll() {
	h.releaseFirst()
	h.open.Do(func() { close(h.rest) })
}

// TestCrashMidFlightResumesExactlyOnce kills a client process (SIGKILL)
// while its creates are in flight, then finishes the work in a new process
// that reads the keys the first one journaled before sending, and checks
// that the server holds exactly one entity per journaled key. The rule it
// proves: persist the key (zerohash's client_transfer_id, Chift's request
// id) and the first-sent time before the request can leave; on restart,
// call Create again with that key.
func TestCrashMidFlightResumesExactlyOnce(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "crashclient")
	build := exec.Command("go", "build", "-o", bin, "./internal/crashclient")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./internal/crashclient: %v\n%s", err, out)
	}
	t.Run("zerohash", func(t *testing.T) {
		srv := saferetrytest.NewZeroHashServer()
		defer srv.Close()
		hold := newCrashHold()
		defer hold.releaseAll() // before Close, which waits for held handlers
		srv.SetFaultFunc(hold.fault)
		reader, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase))
		if err != nil {
			t.Fatal(err)
		}
		runCrashTest(t, bin, crashTarget{
			api: "zerohash",
			url: srv.URL,
			env: []string{
				"ZEROHASH_API_KEY=" + srv.APIKey, "ZEROHASH_API_SECRET=" + srv.Secret,
				"ZEROHASH_PASSPHRASE=" + srv.Passphrase,
			},
			posts: func() int {
				n := 0
				for _, r := range srv.Requests() {
					if r.Method == "POST" && r.Path == "/transfers" {
						n++
					}
				}
				return n
			},
			created:  srv.Created,
			countFor: srv.CreatedWithClientTransferID,
			hold:     hold,
			entity: func(key string) string {
				tr, err := reader.Transfers.FindByClientTransferID(context.Background(), key)
				if err != nil {
					t.Errorf("looking up %s: %v", key, err)
					return ""
				}
				return strconv.FormatInt(tr.ID, 10)
			},
		})
	})

	t.Run("chift", func(t *testing.T) {
		srv := saferetrytest.NewChiftServer()
		defer srv.Close()
		srv.RequireAuth = true
		hold := newCrashHold()
		defer hold.releaseAll() // before Close, which waits for held handlers
		srv.SetFaultFunc(hold.fault)
		const consumerID = "crash-consumer"
		runCrashTest(t, bin, crashTarget{
			api: "chift",
			url: srv.URL,
			env: []string{
				"CHIFT_CLIENT_ID=" + srv.ClientID, "CHIFT_CLIENT_SECRET=" + srv.ClientSecret,
				"CHIFT_ACCOUNT_ID=" + srv.AccountID, "CHIFT_CONSUMER_ID=" + consumerID,
				"CHIFT_CONNECTION_ID=" + srv.ConnectionID,
			},
			posts: func() int {
				n := 0
				for _, r := range srv.Requests() {
					if r.Method == "POST" && r.Path == "/consumers/"+consumerID+"/invoicing/invoices" {
						n++
					}
				}
				return n
			},
			created:  srv.Created,
			countFor: srv.CreatedWithKey,
			hold:     hold,
			entity: func(key string) string {
				// The invoice ids are inv_1..inv_N; find the one key created.
				for i := 1; i <= srv.Created(); i++ {
					if inv, ok := srv.Entity("inv_" + strconv.Itoa(i)); ok && inv.Key == key {
						return inv.ID
					}
				}
				return ""
			},
		})
	})
}

func runCrashTest(t *testing.T, bin string, tg crashTarget) {
	journal := filepath.Join(t.TempDir(), "journal")
	child := func(ctx context.Context, stdout *bytes.Buffer, extra ...string) *exec.Cmd {
		args := append([]string{"-api", tg.api, "-url", tg.url, "-journal", journal, "-n", strconv.Itoa(crashN),
			"-workers", strconv.Itoa(crashWorkers)}, extra...)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), tg.env...)
		cmd.Stdout = stdout
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t.Cleanup(func() {
			if t.Failed() && stderr.Len() > 0 {
				t.Logf("child stderr (%v):\n%s", extra, stderr.String())
			}
		})
		return cmd
	}

	// First run: kill it once a worker has finished a create (reported it
	// done) and moved on to the next, while other creates are on the
	// server, held, and the last ones have not started. The hold keeps
	// that state until the kill. The limits only guard against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var firstOut bytes.Buffer
	first := child(ctx, &firstOut)
	start := time.Now()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	deadline := time.After(time.Minute)
	await := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("the child ended before %s: %v; created %d, posts %d\nstdout:\n%s", what, err, tg.created(), tg.posts(), firstOut.String())
			case <-deadline:
				first.Process.Kill()
				<-exited
				t.Fatalf("no %s: created %d, posts %d\nstdout:\n%s", what, tg.created(), tg.posts(), firstOut.String())
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	await("first create of every worker held", func() bool { return tg.hold.heldCount() >= crashWorkers })
	tg.hold.releaseFirst()
	await("worker on its next create", func() bool { return tg.posts() > crashWorkers })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	killedAt := time.Since(start)
	if ws, ok := first.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("the child was not killed by a signal: %v\n%s", err, firstOut.String())
	}
	postsAtKill, createdAtKill := tg.posts(), tg.created()
	tg.hold.releaseAll() // what reached the server before the kill goes on

	journaled := readCrashJournal(t, journal)
	firstDone, firstFailed := parseCrashDone(t, firstOut.String())
	if len(firstFailed) > 0 {
		t.Fatalf("first run failed creates before the kill: %v", firstFailed)
	}
	for key := range firstDone {
		if _, ok := journaled[key]; !ok {
			t.Errorf("%s was reported done but never journaled", key)
		}
	}
	// Mid-flight: keys sent but not reported done, and the run unfinished.
	if len(firstDone) >= len(journaled) || postsAtKill <= len(firstDone) || len(firstDone) >= crashN {
		t.Fatalf("the kill was not mid-flight: %d journaled, %d posts received, %d reported done",
			len(journaled), postsAtKill, len(firstDone))
	}
	t.Logf("killed after %v: %d journaled, %d posts received, %d created, %d reported done",
		killedAt.Round(time.Millisecond), len(journaled), postsAtKill, createdAtKill, len(firstDone))

	// Second run, a new process with the same journal.
	var resumeOut bytes.Buffer
	resumed := child(ctx, &resumeOut, "-resume")
	start = time.Now()
	if err := resumed.Run(); err != nil {
		t.Fatalf("resumed run: %v\nstdout:\n%s", err, resumeOut.String())
	}
	t.Logf("resumed run took %v", time.Since(start).Round(time.Millisecond))
	done, failed := parseCrashDone(t, resumeOut.String())
	if len(failed) > 0 {
		t.Fatalf("resumed run failed: %v", failed)
	}

	outcomes := map[string]int{}
	for key := range journaled {
		d, ok := done[key]
		if !ok {
			t.Errorf("%s is journaled but the resumed run did not report it done", key)
			continue
		}
		outcomes[d.outcome]++
		if n := tg.countFor(key); n != 1 {
			t.Errorf("%s: %d entities on the server, want exactly 1", key, n)
		}
		if want := tg.entity(key); d.entity != want {
			t.Errorf("%s: the resumed run reports entity %q, the server holds %q", key, d.entity, want)
		}
		if f, ok := firstDone[key]; ok && f.entity != d.entity {
			t.Errorf("%s: entity %q before the crash, %q after", key, f.entity, d.entity)
		}
	}
	for key := range done {
		if _, ok := journaled[key]; !ok {
			t.Errorf("the resumed run created %s, which is not in the journal", key)
		}
	}
	for i := range crashN {
		key := fmt.Sprintf("crash-%s-%d", tg.api, i)
		if _, ok := journaled[key]; !ok && tg.countFor(key) != 0 {
			t.Errorf("%s was never journaled, yet the server holds %d entities for it", key, tg.countFor(key))
		}
	}
	if tg.countFor("") != 0 || tg.created() != len(journaled) {
		t.Errorf("server holds %d entities (%d without a key), want one per journaled key: %d",
			tg.created(), tg.countFor(""), len(journaled))
	}
	// The keys the first run had on the server came back recovered.
	if outcomes["recovered"] < createdAtKill {
		t.Errorf("outcomes %v: want at least %d recovered (created before the kill)", outcomes, createdAtKill)
	}
	t.Logf("resumed outcomes: %v", outcomes)
}

// readCrashJournal returns the journal's keys and first-sent times.
func readCrashJournal(t *testing.T, path string) map[string]time.Time {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	keys := map[string]time.Time{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, stamp, ok := strings.Cut(sc.Text(), " ")
		sent, err := time.Parse(time.RFC3339Nano, stamp)
		if !ok || err != nil {
			t.Fatalf("journal line %q: %v", sc.Text(), err)
		}
		if _, dup := keys[key]; dup {
			t.Fatalf("journal holds %s twice", key)
		}
		keys[key] = sent
	}
	return keys
}

type crashDone struct{ entity, outcome string }

// parseCrashDone reads the child's "done <key> <entity> <outcome>" and
// "fail <key> <error>" lines.
func parseCrashDone(t *testing.T, out string) (map[string]crashDone, []string) {
	t.Helper()
	done := map[string]crashDone{}
	var failed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case line == "":
		case len(f) == 4 && f[0] == "done":
			if _, dup := done[f[1]]; dup {
				t.Errorf("%s reported done twice", f[1])
			}
			done[f[1]] = crashDone{entity: f[2], outcome: f[3]}
		case len(f) >= 2 && f[0] == "fail":
			failed = append(failed, line)
		default:
			t.Errorf("unexpected child output line %q", line)
		}
	}
	return done, failed
}
