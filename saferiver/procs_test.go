package saferiver_test

// The machinery of the crash and fleet tests (crash_test.go, fleet_test.go):
// worker processes (internal/fleetworker) on one database, SIGKILLed
// mid-flight and replaced, against the two fakes running in this process
// with seeded faults; then what every job, every request the fakes saw and
// every business row say.

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"
	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"github.com/saferetry/saferetry-go/saferiver"
	"github.com/saferetry/saferetry-go/saferiver/sqlitedb"
)

// procConsumer is the Chift consumer of every invoice the process tests
// create.
const procConsumer = "f1ee7000-0000-4000-8000-000000000001"

// procStore is one database as the process tests see it: the DSN the
// worker processes open, an insert-only River client, and the few
// statements the tests run, written once for SQLite and PostgreSQL.
type procStore[TTx any] struct {
	backend  string // "sqlite" or "postgres"
	dsn      string // the worker's -db
	client   *river.Client[TTx]
	ph       func(n int) string // the nth placeholder
	begin    func(ctx context.Context) (TTx, error)
	commit   func(ctx context.Context, tx TTx) error
	rollback func(ctx context.Context, tx TTx) error
	execTx   func(ctx context.Context, tx TTx, q string, args ...any) error
	count    func(ctx context.Context, q string) (int, error)
	// pairs runs a two-column query of text; a NULL second column reads "".
	pairs func(ctx context.Context, q string) (map[string]string, error)
	// sessionsOf counts the server sessions a worker still has. A
	// PostgreSQL backend finishes the statement it received (a COMMIT, say)
	// after its client died, so a dead worker's writes can land until its
	// sessions are gone; a SQLite writer's end with its process.
	sessionsOf func(ctx context.Context, worker string) (int, error)
}

// sqliteProcStore is a fresh migrated SQLite file with the business
// tables, which worker processes open by its path.
func sqliteProcStore(t *testing.T) *procStore[*sql.Tx] {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobs.db")
	db, err := sqlitedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	driver := riversqlite.New(db)
	ctx := context.Background()
	if err := saferiver.Migrate(ctx, driver); err != nil {
		t.Fatal(err)
	}
	for _, ddl := range []string{
		`CREATE TABLE invoices (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, entity_id TEXT)`,
		`CREATE TABLE payouts (id INTEGER PRIMARY KEY, client_transfer_id TEXT NOT NULL UNIQUE, transfer_id INTEGER)`,
	} {
		if _, err := db.Exec(ddl); err != nil {
			t.Fatal(err)
		}
	}
	client, err := river.NewClient(driver, &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &procStore[*sql.Tx]{
		backend: "sqlite", dsn: path, client: client,
		sessionsOf: func(context.Context, string) (int, error) { return 0, nil },
		ph:         func(int) string { return "?" },
		begin:      func(ctx context.Context) (*sql.Tx, error) { return db.BeginTx(ctx, nil) },
		commit:     func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
		rollback:   func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() },
		execTx: func(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
			_, err := tx.ExecContext(ctx, q, args...)
			return err
		},
		count: func(ctx context.Context, q string) (n int, err error) {
			err = db.QueryRowContext(ctx, q).Scan(&n)
			return n, err
		},
		pairs: func(ctx context.Context, q string) (map[string]string, error) {
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			out := map[string]string{}
			for rows.Next() {
				var k string
				var v sql.NullString
				if err := rows.Scan(&k, &v); err != nil {
					return nil, err
				}
				out[k] = v.String
			}
			return out, rows.Err()
		},
	}
}

// pgProcStore is a schema of its own on the test server (pgDB), migrated,
// with the business tables; worker processes reach it by the URL.
func pgProcStore(t *testing.T) *procStore[pgx.Tx] {
	t.Helper()
	pool, driver, url := pgDB(t)
	return pgProcStoreOf(t, pool, driver, url)
}

func pgProcStoreOf(t *testing.T, pool *pgxpool.Pool, driver *riverpgxv5.Driver, url string) *procStore[pgx.Tx] {
	client, err := river.NewClient(driver, &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &procStore[pgx.Tx]{
		backend: "postgres", dsn: url, client: client,
		sessionsOf: func(ctx context.Context, worker string) (n int, err error) {
			err = pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, worker).Scan(&n)
			return n, err
		},
		ph:       func(n int) string { return "$" + strconv.Itoa(n) },
		begin:    func(ctx context.Context) (pgx.Tx, error) { return pool.Begin(ctx) },
		commit:   func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) },
		rollback: func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) },
		execTx: func(ctx context.Context, tx pgx.Tx, q string, args ...any) error {
			_, err := tx.Exec(ctx, q, args...)
			return err
		},
		count: func(ctx context.Context, q string) (n int, err error) {
			err = pool.QueryRow(ctx, q).Scan(&n)
			return n, err
		},
		pairs: func(ctx context.Context, q string) (map[string]string, error) {
			rows, err := pool.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			out := map[string]string{}
			for rows.Next() {
				var k string
				var v *string
				if err := rows.Scan(&k, &v); err != nil {
					return nil, err
				}
				out[k] = ""
				if v != nil {
					out[k] = *v
				}
			}
			return out, rows.Err()
		},
	}
}

// buildFleetWorker builds internal/fleetworker into dir.
func buildFleetWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fleetworker")
	out, err := exec.Command("go", "build", "-o", bin, "./internal/fleetworker").CombinedOutput()
	if err != nil {
		t.Fatalf("building the worker: %v\n%s", err, out)
	}
	return bin
}

// workerProc is one running worker process.
type workerProc struct {
	id   string
	cmd  *exec.Cmd
	log  string        // its stdout and stderr
	done chan struct{} // closed when it has exited
	err  error         // Wait's, once done is closed
	// killed: the test sent SIGKILL or SIGTERM, so an exit is expected;
	// sigkilled: SIGKILL, so it need not exit 0.
	killed, sigkilled bool
}

// procPlan is one run of the process tests.
type procPlan struct {
	name       string // the summary line starts with it
	jobs       int    // committed jobs, at least
	procs      int    // worker processes at once
	kills      int    // SIGKILLs mid-flight, each followed by a new process
	faultPct   uint64 // percent of first attempts faulted
	dupEvery   int    // every dupEvery-th Chift create reuses a committed invoice number, 0 never
	maxWorkers int    // jobs worked at once per process
}

// plannedJob is one create the test inserted, committed or rolled back.
type plannedJob struct {
	api       string // "chift" or "zerohash"
	key       string
	jobID     int64
	number    int // the invoice number, or the transfer's amount's integer part
	committed bool
}

// procRun is the state of one run.
type procRun[TTx any] struct {
	t     *testing.T
	plan  procPlan
	st    *procStore[TTx]
	bin   string
	seed  uint64
	start time.Time

	chift    *saferetrytest.ChiftServer
	zerohash *saferetrytest.ZeroHashServer
	zhReader *saferetry.Client // reads transfers back, in this process
	gate     *killGate

	mu        sync.Mutex
	jobs      []*plannedJob
	byKey     map[string]*plannedJob
	zhPosted  map[string]int // client_transfer_id of every POST /transfers the fault func saw
	faulted   int
	insertErr error
	inserted  chan struct{} // closed when every insert is done
	procs     []*workerProc
	nextProc  int
	kills     int
	orphans   map[int64]orphan // jobs a kill left running on a dead worker
}

// seededFaults are what a faulted first attempt meets.
var seededFaults = []saferetrytest.Fault{saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultSlowCommit,
	saferetrytest.FaultResetMidBody, saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
	saferetrytest.FaultDropBeforeProcessing}

// procSeed is SAFERIVER_FLEET_SEED, or the clock.
func procSeed(t *testing.T) uint64 {
	if s := os.Getenv("SAFERIVER_FLEET_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SAFERIVER_FLEET_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

func newProcRun[TTx any](t *testing.T, st *procStore[TTx], plan procPlan) *procRun[TTx] {
	r := &procRun[TTx]{t: t, plan: plan, st: st, seed: procSeed(t), byKey: map[string]*plannedJob{},
		zhPosted: map[string]int{}, orphans: map[int64]orphan{}, inserted: make(chan struct{}), gate: newKillGate()}
	t.Logf("%s: seed %d (SAFERIVER_FLEET_SEED=%d gives the same keys and seeded faults)", plan.name, r.seed, r.seed)
	r.bin = buildFleetWorker(t)
	r.chift, r.zerohash = saferetrytest.NewChiftServer(), saferetrytest.NewZeroHashServer()
	t.Cleanup(r.chift.Close)
	t.Cleanup(r.zerohash.Close)
	// A slow commit outlasts an attempt (the worker's -attempt-timeout is
	// 400ms), so its create is retried while the key is in process.
	r.chift.SlowDelay, r.zerohash.SlowDelay = 800*time.Millisecond, 800*time.Millisecond
	r.chift.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault { return r.fault("chift", key, attempt) })
	r.zerohash.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault { return r.fault("zerohash", id, attempt) })
	var err error
	r.zhReader, err = saferetry.NewClient(r.zerohash.URL, saferetry.WithZeroHashAuth(r.zerohash.APIKey, r.zerohash.Secret, r.zerohash.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stopAll) // before the fakes close and the database goes
	return r
}

// fault decides a create's fault: the kill gate's, when it is armed;
// else, on a first attempt, a seeded one for faultPct of the keys.
func (r *procRun[TTx]) fault(api, key string, attempt int) saferetrytest.Fault {
	if api == "zerohash" {
		r.mu.Lock()
		r.zhPosted[key]++
		r.mu.Unlock()
	}
	if f, caught := r.gate.catch(api, key); caught {
		return f
	}
	if attempt > 1 {
		return saferetrytest.FaultNone
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", r.seed, key)
	sum := h.Sum64()
	if sum%100 >= r.plan.faultPct {
		return saferetrytest.FaultNone
	}
	r.mu.Lock()
	r.faulted++
	r.mu.Unlock()
	return seededFaults[(sum/100)%uint64(len(seededFaults))]
}

// killGate holds the next create request either fake receives, once
// armed, until released: the request is then in flight, its job running
// in the worker that sent it, which the test kills.
type killGate struct {
	mu      sync.Mutex
	armed   bool
	arrived chan string              // "api key" of the caught request
	release chan saferetrytest.Fault // what the caught request then meets
	closed  chan struct{}
	once    sync.Once
}

func newKillGate() *killGate {
	return &killGate{arrived: make(chan string, 1), release: make(chan saferetrytest.Fault, 1), closed: make(chan struct{})}
}

func (g *killGate) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
}

func (g *killGate) catch(api, key string) (saferetrytest.Fault, bool) {
	g.mu.Lock()
	if !g.armed {
		g.mu.Unlock()
		return saferetrytest.FaultNone, false
	}
	g.armed = false
	g.mu.Unlock()
	g.arrived <- api + " " + key
	select {
	case f := <-g.release:
		return f, true
	case <-g.closed:
		return saferetrytest.FaultNone, true
	}
}

func (g *killGate) close() { g.once.Do(func() { close(g.closed) }) }

// insertAll inserts, each in a transaction of its own beside its business
// row, creates until plan.jobs are committed: one Chift create, one
// transfer, or both, in turn; every seventh transaction rolls back. It
// inserts the first half before it returns and the rest in the
// background, while the workers run; r.inserted is closed at the end.
func (r *procRun[TTx]) insertAll() {
	ctx := context.Background()
	committed, k, chiftN, lastNumber := 0, 0, 0, -1
	step := func() error {
		kinds := [][]string{{"chift"}, {"zerohash"}, {"chift", "zerohash"}}[k%3]
		rollback := k%7 == 6
		k++
		tx, err := r.st.begin(ctx)
		if err != nil {
			return err
		}
		var batch []*plannedJob
		for _, api := range kinds {
			j := &plannedJob{api: api, number: k*10 + len(batch)}
			key := seededKey(r.seed, api, j.number)
			var enq *saferiver.Enqueued
			if api == "chift" {
				chiftN++
				if r.plan.dupEvery > 0 && chiftN%r.plan.dupEvery == 0 && lastNumber >= 0 {
					j.number = lastNumber // refused by Chift: ERROR_INVOICE_NUMBER_ALREADY_USED
				}
				in := saferetry.ChiftCreate{Path: "consumers/" + procConsumer + "/invoicing/invoices",
					Body:       map[string]any{"invoice_number": fmt.Sprintf("FLEET-%d", j.number), "total": j.number},
					ConsumerID: procConsumer, ConnectionID: r.chift.ConnectionID, RequestID: key}
				if enq, err = saferiver.InsertChiftCreateTx(ctx, r.st.client, tx, in, nil); err == nil {
					err = r.st.execTx(ctx, tx, "INSERT INTO invoices (request_id) VALUES ("+r.st.ph(1)+")", enq.Key)
				}
			} else {
				req := saferetry.TransferRequest{FromParticipantCode: "DEMO01", FromAccountGroup: "00SCXM",
					ToParticipantCode: "CUST01", ToAccountGroup: "00SCXM", Asset: "USD", Amount: fmt.Sprintf("%d.25", j.number),
					ClientTransferID: key}
				if enq, err = saferiver.InsertTransferCreateTx(ctx, r.st.client, tx, req, nil); err == nil {
					err = r.st.execTx(ctx, tx, "INSERT INTO payouts (client_transfer_id) VALUES ("+r.st.ph(1)+")", enq.Key)
				}
			}
			if err != nil {
				_ = r.st.rollback(ctx, tx)
				return err
			}
			if enq.Existing || enq.Key != key {
				_ = r.st.rollback(ctx, tx)
				return fmt.Errorf("key %s: inserted as %+v", key, enq)
			}
			j.key, j.jobID = enq.Key, enq.JobID
			batch = append(batch, j)
		}
		if rollback {
			err = r.st.rollback(ctx, tx)
		} else {
			err = r.st.commit(ctx, tx)
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, j := range batch {
			j.committed = !rollback
			r.jobs = append(r.jobs, j)
			r.byKey[j.key] = j
			if j.committed {
				committed++
				if j.api == "chift" {
					lastNumber = j.number
				}
			}
		}
		return nil
	}
	for committed < r.plan.jobs/2 {
		if err := step(); err != nil {
			r.t.Fatalf("inserting: %v", err)
		}
	}
	go func() {
		defer close(r.inserted)
		for committed < r.plan.jobs {
			if err := step(); err != nil {
				r.mu.Lock()
				r.insertErr = err
				r.mu.Unlock()
				return
			}
		}
	}()
}

// seededKey is the key of the create numbered n: a UUIDv4 drawn from the
// seed, so that a seed gives the same keys, and so the same faults.
func seededKey(seed uint64, api string, n int) string {
	b := sha256.Sum256([]byte(fmt.Sprintf("%d/%s/%d", seed, api, n)))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// committedJobs is the number of committed jobs, final once r.inserted is
// closed.
func (r *procRun[TTx]) committedJobs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, j := range r.jobs {
		if j.committed {
			n++
		}
	}
	return n
}

// startProc starts a new worker process.
func (r *procRun[TTx]) startProc() *workerProc {
	r.mu.Lock()
	r.nextProc++
	p := &workerProc{id: fmt.Sprintf("%s-w%d", strings.ReplaceAll(r.plan.name, " ", "-"), r.nextProc), done: make(chan struct{})}
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	p.log = filepath.Join(r.t.TempDir(), p.id+".log")
	logFile, err := os.Create(p.log)
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd = exec.Command(r.bin)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = append(os.Environ(),
		"FLEETWORKER_DB="+r.st.dsn,
		"FLEETWORKER_ID="+p.id,
		"FLEETWORKER_CHIFT_URL="+r.chift.URL,
		"FLEETWORKER_ZEROHASH_URL="+r.zerohash.URL,
		"FLEETWORKER_ZEROHASH_API_KEY="+r.zerohash.APIKey,
		"FLEETWORKER_ZEROHASH_SECRET="+r.zerohash.Secret,
		"FLEETWORKER_ZEROHASH_PASSPHRASE="+r.zerohash.Passphrase,
		"FLEETWORKER_MAX_WORKERS="+strconv.Itoa(r.plan.maxWorkers),
		"FLEETWORKER_JOB_TIMEOUT=5s",
		"FLEETWORKER_RESCUE_AFTER=7s",
		"FLEETWORKER_ATTEMPT_TIMEOUT=400ms",
		"FLEETWORKER_LOG_LEVEL=warn",
	)
	if os.Getenv("SAFERIVER_FLEET_DEFAULT_BUDGET") == "" {
		// 30 % of first attempts faulted call for more retries than the
		// SDK's default budget (20 % of requests, plus 10 a second) funds
		// at full speed, as in the root module's chaos suite. Spent, it
		// refuses the lookups and reposts that resume a create, each
		// refusal costs the job an attempt, and with this fast retry
		// policy the 25 attempts are spent in seconds: the job is cancelled
		// for reconciliation while the API is healthy. The budget is not
		// what these tests test; SAFERIVER_FLEET_DEFAULT_BUDGET=1 keeps
		// the default and shows that.
		p.cmd.Env = append(p.cmd.Env, "FLEETWORKER_RETRY_BUDGET_RATIO=10", "FLEETWORKER_RETRY_BUDGET_PER_SECOND=1000")
	}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		r.t.Fatalf("starting worker %s: %v", p.id, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p
}

// stopAll ends every worker still running: SIGTERM, then SIGKILL if it
// has not exited within 20 s.
func (r *procRun[TTx]) stopAll() {
	r.gate.close() // a held request would hold its worker's stop
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range procs {
		select {
		case <-p.done:
			continue
		default:
		}
		r.mu.Lock()
		p.killed = true
		r.mu.Unlock()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			r.mu.Lock()
			p.sigkilled = true
			r.mu.Unlock()
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// checkProcs fails the test if a worker exited that the test did not end.
func (r *procRun[TTx]) checkProcs() {
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range procs {
		select {
		case <-p.done:
			r.mu.Lock()
			killed := p.killed
			r.mu.Unlock()
			if !killed {
				r.dumpLogs()
				r.t.Fatalf("worker %s exited by itself: %v", p.id, p.err)
			}
		default:
		}
	}
}

// dumpLogs logs the tail of every worker's log.
func (r *procRun[TTx]) dumpLogs() {
	r.mu.Lock()
	procs := make([]workerProc, 0, len(r.procs))
	for _, p := range r.procs {
		procs = append(procs, workerProc{id: p.id, log: p.log, killed: p.killed})
	}
	r.mu.Unlock()
	for _, p := range procs {
		b, _ := os.ReadFile(p.log)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		r.t.Logf("worker %s (ended by the test: %v), last lines of its log:\n%s", p.id, p.killed, strings.Join(lines, "\n"))
	}
}

// waitFor polls cond every 100 ms until it holds, checking the workers
// and the inserts on the way; it fails the test after within.
func (r *procRun[TTx]) waitFor(what string, within time.Duration, cond func() (bool, error)) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.checkProcs()
		r.mu.Lock()
		insertErr := r.insertErr
		r.mu.Unlock()
		if insertErr != nil {
			r.t.Fatalf("inserting: %v", insertErr)
		}
		// An error (the database restarting, say) is polled through
		// until the deadline.
		ok, err := cond()
		if ok && err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.dumpLogs()
			r.t.Fatalf("%s: not after %v (last error: %v)", what, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *procRun[TTx]) completed() (int, error) {
	return r.st.count(context.Background(), `SELECT count(*) FROM river_job WHERE state = 'completed'`)
}

// killMidFlight waits until the completed jobs reach atLeast, catches the
// next create request at a fake, SIGKILLs the worker whose job sent it
// while the request is held, and starts a new worker. The kill counts
// when jobs were left running on the dead worker (orphaned: only River's
// rescuer can give them back); otherwise (the caught job ended before the
// kill, on a loaded machine) it is tried again.
func (r *procRun[TTx]) killMidFlight(atLeast int) {
	r.t.Helper()
	ctx := context.Background()
	r.waitFor(fmt.Sprintf("%d completed jobs before kill %d", atLeast, r.kills+1), 5*time.Minute, func() (bool, error) {
		n, err := r.completed()
		return n >= atLeast, err
	})
	for try := 1; ; try++ {
		if try > 10 {
			r.t.Fatalf("kill %d: no kill mid-flight in 10 tries", r.kills+1)
		}
		r.gate.arm()
		var caught string
		r.waitFor("a create request to catch", 2*time.Minute, func() (bool, error) {
			select {
			case caught = <-r.gate.arrived:
				return true, nil
			default:
				return false, nil
			}
		})
		api, key, _ := strings.Cut(caught, " ")
		var job *plannedJob
		r.waitFor("the caught key's job among the inserted", time.Minute, func() (bool, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			job = r.byKey[key]
			return job != nil, nil
		})
		row, err := r.st.client.JobGet(ctx, job.jobID)
		if err != nil {
			r.t.Fatal(err)
		}
		victim := r.procOf(row)
		if victim == nil {
			r.gate.release <- saferetrytest.FaultNone
			r.t.Logf("kill %d: job %d of caught %s request is %s, attempted by %v, on no live worker; catching another", r.kills+1, row.ID, api, row.State, row.AttemptedBy)
			continue
		}
		r.mu.Lock()
		victim.killed, victim.sigkilled = true, true
		r.mu.Unlock()
		killedAt := time.Now()
		if err := victim.cmd.Process.Kill(); err != nil {
			r.t.Fatal(err)
		}
		<-victim.done
		r.waitFor("the killed worker's database sessions to end", time.Minute, func() (bool, error) {
			n, err := r.st.sessionsOf(ctx, victim.id)
			return n == 0, err
		})
		orphans, err := r.orphansOf(victim.id)
		if err != nil {
			r.t.Fatal(err)
		}
		// The caught request now completes, answered to a dead worker: the
		// entity exists and nobody has recorded it.
		r.gate.release <- saferetrytest.FaultNone
		r.startProc()
		if len(orphans) == 0 {
			if try >= 5 {
				r.t.Fatalf("kill %d: %d SIGKILLs left no job running on the killed worker", r.kills+1, try)
			}
			r.t.Logf("kill %d: worker %s had no job left running when it died; again", r.kills+1, victim.id)
			continue
		}
		r.mu.Lock()
		r.kills++
		for _, id := range orphans {
			r.orphans[id] = orphan{worker: victim.id, killedAt: killedAt}
		}
		r.mu.Unlock()
		r.t.Logf("kill %d: SIGKILL %s while its %s create %s was held at the fake; %d jobs left running on it (after %d or more completed)",
			r.kills, victim.id, api, key, len(orphans), atLeast)
		return
	}
}

// procOf is the live worker a running job was handed to.
func (r *procRun[TTx]) procOf(row *rivertype.JobRow) *workerProc {
	if row.State != rivertype.JobStateRunning || len(row.AttemptedBy) == 0 {
		return nil
	}
	last := row.AttemptedBy[len(row.AttemptedBy)-1]
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		if p.id == last && !p.killed {
			return p
		}
	}
	return nil
}

// orphan is a job a kill left running on a dead worker.
type orphan struct {
	worker   string
	killedAt time.Time
}

// orphansOf lists the jobs still running on a worker that is dead.
func (r *procRun[TTx]) orphansOf(worker string) ([]int64, error) {
	res, err := r.st.client.JobList(context.Background(), river.NewJobListParams().States(rivertype.JobStateRunning).First(10000))
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, j := range res.Jobs {
		if len(j.AttemptedBy) > 0 && j.AttemptedBy[len(j.AttemptedBy)-1] == worker {
			ids = append(ids, j.ID)
		}
	}
	return ids, nil
}

// allJobs lists every job in the database.
func (r *procRun[TTx]) allJobs() []*rivertype.JobRow {
	var all []*rivertype.JobRow
	params := river.NewJobListParams().First(1000)
	for {
		res, err := r.st.client.JobList(context.Background(), params)
		if err != nil {
			r.t.Fatal(err)
		}
		all = append(all, res.Jobs...)
		if len(res.Jobs) < 1000 {
			return all
		}
		params = params.After(river.JobListCursorFromJob(res.Jobs[len(res.Jobs)-1]))
	}
}

// run inserts, starts plan.procs workers, kills plan.kills of them
// mid-flight, spread over the run, waits until every job is final, stops
// the workers and checks everything. It prints the summary line.
func (r *procRun[TTx]) run() procSummary {
	r.start = time.Now()
	r.insertAll()
	for range r.plan.procs {
		r.startProc()
	}
	for k := 1; k <= r.plan.kills; k++ {
		r.killMidFlight(k * r.plan.jobs / (r.plan.kills + 1))
	}
	r.waitFor("every insert", 5*time.Minute, func() (bool, error) {
		select {
		case <-r.inserted:
			return true, nil
		default:
			return false, nil
		}
	})
	total := r.committedJobs()
	within := 5*time.Minute + time.Duration(total)*50*time.Millisecond
	r.waitFor(fmt.Sprintf("all %d jobs final", total), within, func() (bool, error) {
		n, err := r.st.count(context.Background(), `SELECT count(*) FROM river_job WHERE state IN ('completed', 'cancelled', 'discarded')`)
		return n >= total, err
	})
	wall := time.Since(r.start)
	r.stopAll()
	r.mu.Lock()
	for _, p := range r.procs {
		if !p.sigkilled && p.err != nil {
			r.t.Errorf("worker %s, stopped by SIGTERM: %v", p.id, p.err)
		}
	}
	r.mu.Unlock()
	s := r.check()
	s.wall = wall
	fmt.Println(s.line(r.plan.name))
	if r.t.Failed() {
		r.dumpLogs()
	}
	return s
}

// procSummary is what a run measured.
type procSummary struct {
	jobs, chiftJobs, zhJobs   int
	rolledBack                int
	rejected                  int // cancelled: an invoice number already used, as planned
	duplicates, lost          int
	kills, orphaned, rescued  int
	attemptsOver1, faulted    int
	chiftPosts, zhPosts       int
	wall                      time.Duration
	rescueMax                 time.Duration // the longest from a kill to the end of a job it left running
	completed, otherCancelled int
}

func (s procSummary) line(name string) string {
	return fmt.Sprintf("%s jobs=%d (chift %d, zerohash %d) completed=%d rejected=%d duplicates=%d lost=%d kills=%d orphaned=%d rescued=%d attempts>1=%d faulted=%d posts=%d rolled_back=%d kill_to_done_max=%s wall=%s",
		name, s.jobs, s.chiftJobs, s.zhJobs, s.completed, s.rejected, s.duplicates, s.lost, s.kills, s.orphaned, s.rescued,
		s.attemptsOver1, s.faulted, s.chiftPosts+s.zhPosts, s.rolledBack, s.rescueMax.Round(100*time.Millisecond), s.wall.Round(100*time.Millisecond))
}

// jobKeyArgs reads the key from a job's args, whichever its kind.
type jobKeyArgs struct {
	RequestID        string `json:"request_id"`
	ClientTransferID string `json:"client_transfer_id"`
}

// check asserts, from the database, the fakes and the plan:
//   - one job per committed key, none for a rolled-back one;
//   - every job final: completed, or cancelled with its reason, which only
//     a reused invoice number may cause (one create per number succeeds);
//   - one entity per completed job, made under the job's key, with the
//     job's fields; none for a cancelled job or a rolled-back insert, and
//     none under any other key;
//   - every create request either fake received carried the key of exactly
//     one committed job; a rolled-back key never reached a fake;
//   - every job's output holds its own key, and the id of the entity made
//     under that key, which the business row holds too;
//   - every job a kill left running on a dead worker was rescued and ended
//     on a later attempt.
func (r *procRun[TTx]) check() procSummary {
	t, ctx := r.t, context.Background()
	r.mu.Lock()
	defer r.mu.Unlock()
	var s procSummary
	s.kills, s.orphaned, s.faulted = r.kills, len(r.orphans), r.faulted

	rows := r.allJobs()
	jobByKey := map[string]*rivertype.JobRow{}
	for _, row := range rows {
		var a jobKeyArgs
		if err := json.Unmarshal(row.EncodedArgs, &a); err != nil {
			t.Fatalf("job %d args %s: %v", row.ID, row.EncodedArgs, err)
		}
		key := a.RequestID + a.ClientTransferID
		if jobByKey[key] != nil {
			t.Errorf("key %s: two jobs, %d and %d", key, jobByKey[key].ID, row.ID)
		}
		jobByKey[key] = row
	}
	invoices, err := r.st.pairs(ctx, `SELECT request_id, entity_id FROM invoices`)
	if err != nil {
		t.Fatal(err)
	}
	payouts, err := r.st.pairs(ctx, `SELECT client_transfer_id, CAST(transfer_id AS TEXT) FROM payouts`)
	if err != nil {
		t.Fatal(err)
	}

	retryCauses := map[string]int{} // why attempts failed, for the log
	defer func() {
		for cause, n := range retryCauses {
			t.Logf("%d failed attempts: %s", n, cause)
		}
	}()
	chiftEntities, zhEntities := 0, 0
	completedByNumber := map[int]int{}
	jobsByNumber := map[int]int{} // committed Chift jobs per invoice number
	for _, j := range r.jobs {
		if j.committed && j.api == "chift" {
			jobsByNumber[j.number]++
		}
	}
	for _, j := range r.jobs {
		created := r.createdWith(j)
		row := jobByKey[j.key]
		if !j.committed {
			s.rolledBack++
			if row != nil {
				t.Errorf("rolled-back %s key %s: job %d exists", j.api, j.key, row.ID)
			}
			if created != 0 {
				t.Errorf("rolled-back %s key %s: %d entities", j.api, j.key, created)
				s.duplicates += created
			}
			if _, ok := map[string]map[string]string{"chift": invoices, "zerohash": payouts}[j.api][j.key]; ok {
				t.Errorf("rolled-back %s key %s: a business row exists", j.api, j.key)
			}
			continue
		}
		s.jobs++
		if j.api == "chift" {
			s.chiftJobs++
			chiftEntities += created
		} else {
			s.zhJobs++
			zhEntities += created
		}
		if row == nil {
			t.Errorf("committed %s key %s: no job", j.api, j.key)
			s.lost++
			continue
		}
		if row.Attempt > 1 {
			s.attemptsOver1++
			for _, e := range row.Errors {
				retryCauses[errorClass(e.Error)]++
			}
		}
		for _, e := range row.Errors {
			if strings.Contains(e.Error, "rescued") {
				s.rescued++
				break
			}
		}
		out, ok := procOutput(row)
		if !ok {
			t.Errorf("%s job %d (%s, key %s): no output; errors %v", j.api, row.ID, row.State, j.key, row.Errors)
			s.lost++
			continue
		}
		if out.Key != j.key || out.API != j.api {
			t.Errorf("%s job %d: output names %s key %s, the job's args %s", j.api, row.ID, out.API, out.Key, j.key)
		}
		switch row.State {
		case rivertype.JobStateCompleted:
			s.completed++
			if created != 1 {
				t.Errorf("%s job %d (key %s) completed: %d entities under its key, want 1", j.api, row.ID, j.key, created)
				if created == 0 {
					s.lost++
				} else {
					s.duplicates += created - 1
				}
			}
			if j.api == "chift" {
				completedByNumber[j.number]++
				r.checkInvoice(j, row, out, invoices[j.key])
			} else {
				r.checkTransfer(j, row, out, payouts[j.key])
			}
		case rivertype.JobStateCancelled:
			if out.Error == "" || out.Outcome == "" {
				t.Errorf("%s job %d (key %s) cancelled without its reason: output %+v, errors %v", j.api, row.ID, j.key, out, row.Errors)
			}
			if j.api == "chift" && jobsByNumber[j.number] > 1 && out.Outcome == "rejected" && out.StatusCode == 409 {
				s.rejected++
			} else {
				s.otherCancelled++
				s.lost++
				t.Errorf("%s job %d (key %s) cancelled, which only a reused invoice number should cause: %s (%s)", j.api, row.ID, j.key, out.Outcome, out.Error)
			}
			if created != 0 {
				t.Errorf("%s job %d (key %s) cancelled, yet %d entities exist under its key", j.api, row.ID, j.key, created)
				s.duplicates += created - 1
			}
			biz := map[string]map[string]string{"chift": invoices, "zerohash": payouts}[j.api][j.key]
			if biz != "" {
				t.Errorf("%s job %d (key %s) cancelled, yet its business row holds %s", j.api, row.ID, j.key, biz)
			}
		default:
			t.Errorf("%s job %d (key %s) ended %s at attempt %d: %v", j.api, row.ID, j.key, row.State, row.Attempt, row.Errors)
			s.lost++
		}
	}
	for number := range jobsByNumber {
		if completedByNumber[number] != 1 {
			t.Errorf("invoice number FLEET-%d: %d jobs completed, want exactly 1", number, completedByNumber[number])
		}
	}
	if n := r.chift.Created(); n != chiftEntities {
		t.Errorf("Chift holds %d invoices, %d of them under committed keys", n, chiftEntities)
		s.duplicates += n - chiftEntities
	}
	if n := r.zerohash.Created(); n != zhEntities {
		t.Errorf("zerohash holds %d transfers, %d of them under committed keys", n, zhEntities)
		s.duplicates += n - zhEntities
	}
	if len(jobByKey) != s.jobs {
		t.Errorf("%d jobs in the database, %d committed", len(jobByKey), s.jobs)
	}
	if len(invoices) != s.chiftJobs || len(payouts) != s.zhJobs {
		t.Errorf("%d invoice and %d payout rows, want %d and %d", len(invoices), len(payouts), s.chiftJobs, s.zhJobs)
	}

	// Every create request carried one committed job's key; so did every
	// other Chift request that carried a key at all. zerohash's request
	// log holds X-Request-Id, not the client_transfer_id: the fault func
	// saw the id of every POST that passed the duplicate check, which the
	// first POST of an id always does.
	for _, req := range r.chift.Requests() {
		if req.Method == "POST" {
			s.chiftPosts++
		} else if req.Key == "" {
			continue
		}
		j := r.byKey[req.Key]
		if j == nil || !j.committed || j.api != "chift" {
			t.Errorf("Chift received %s %s with key %q, which no committed Chift job holds (%+v)", req.Method, req.Path, req.Key, j)
		}
	}
	for key, n := range r.zhPosted {
		s.zhPosts += n
		j := r.byKey[key]
		if j == nil || !j.committed || j.api != "zerohash" {
			t.Errorf("zerohash received %d POSTs with client_transfer_id %q, which no committed transfer job holds", n, key)
		}
	}

	for id, o := range r.orphans {
		worker := o.worker
		row, err := r.st.client.JobGet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if row.FinalizedAt != nil {
			s.rescueMax = max(s.rescueMax, row.FinalizedAt.Sub(o.killedAt))
		}
		if row.Attempt < 2 || !slices.Contains(row.AttemptedBy, worker) || row.AttemptedBy[len(row.AttemptedBy)-1] == worker {
			t.Errorf("job %d, left running on killed worker %s, ended %s at attempt %d by %v: want a later attempt by another worker",
				id, worker, row.State, row.Attempt, row.AttemptedBy)
		}
	}
	if s.kills != r.plan.kills {
		t.Errorf("%d kills mid-flight, want %d", s.kills, r.plan.kills)
	}
	return s
}

// errorClass shortens a job's error for the log: keys, ids and numbers
// replaced, so that errors of one kind count together.
func errorClass(e string) string {
	e = uuidRE.ReplaceAllString(e, "<key>")
	e = numberRE.ReplaceAllString(e, "<n>")
	if len(e) > 300 {
		e = e[:300] + "..."
	}
	return e
}

var (
	uuidRE   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	numberRE = regexp.MustCompile(`[0-9]+(\.[0-9]+)?(ms|s|µs)?`)
)

// createdWith is how many entities the fake made under j's key.
func (r *procRun[TTx]) createdWith(j *plannedJob) int {
	if j.api == "chift" {
		return r.chift.CreatedWithKey(j.key)
	}
	return r.zerohash.CreatedWithClientTransferID(j.key)
}

// checkInvoice: the invoice in the output was made under the job's key,
// with the job's invoice number, and the business row holds its id.
func (r *procRun[TTx]) checkInvoice(j *plannedJob, row *rivertype.JobRow, out saferiver.Output, biz string) {
	inv, ok := r.chift.Entity(out.EntityID)
	switch {
	case !ok:
		r.t.Errorf("chift job %d: output names invoice %q, which Chift does not hold", row.ID, out.EntityID)
	case inv.Key != j.key:
		r.t.Errorf("chift job %d (key %s): invoice %s was made under key %s", row.ID, j.key, inv.ID, inv.Key)
	case inv.Body["invoice_number"] != fmt.Sprintf("FLEET-%d", j.number):
		r.t.Errorf("chift job %d (key %s): invoice %s has number %v, the job FLEET-%d", row.ID, j.key, inv.ID, inv.Body["invoice_number"], j.number)
	}
	if biz != out.EntityID {
		r.t.Errorf("chift job %d (key %s): business row holds entity %q, the job made %q", row.ID, j.key, biz, out.EntityID)
	}
}

// checkTransfer: the transfer zerohash holds under the job's key is the
// one in the output and in the business row, with the job's amount.
func (r *procRun[TTx]) checkTransfer(j *plannedJob, row *rivertype.JobRow, out saferiver.Output, biz string) {
	tr, err := r.zhReader.Transfers.FindByClientTransferID(context.Background(), j.key)
	switch {
	case err != nil:
		r.t.Errorf("zerohash job %d (key %s): looking its transfer up: %v", row.ID, j.key, err)
		return
	case tr.ID != out.TransferID:
		r.t.Errorf("zerohash job %d (key %s): output names transfer %d, zerohash holds %d under the key", row.ID, j.key, out.TransferID, tr.ID)
	case tr.Amount != fmt.Sprintf("%d.25", j.number):
		r.t.Errorf("zerohash job %d (key %s): transfer %d has amount %s, the job %d.25", row.ID, j.key, tr.ID, tr.Amount, j.number)
	}
	if biz != strconv.FormatInt(tr.ID, 10) {
		r.t.Errorf("zerohash job %d (key %s): business row holds transfer %q, zerohash made %d", row.ID, j.key, biz, tr.ID)
	}
}

// procOutput reads the Output a job recorded.
func procOutput(row *rivertype.JobRow) (saferiver.Output, bool) {
	var meta struct {
		Output *saferiver.Output `json:"output"`
	}
	if err := json.Unmarshal(row.Metadata, &meta); err != nil || meta.Output == nil {
		return saferiver.Output{}, false
	}
	return *meta.Output, true
}

// fleetJobs is SAFERIVER_FLEET_JOBS, or def.
func fleetJobs(t *testing.T, def int) int {
	s := os.Getenv("SAFERIVER_FLEET_JOBS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 {
		t.Fatalf("SAFERIVER_FLEET_JOBS=%q: want an integer, at least 10", s)
	}
	return n
}
