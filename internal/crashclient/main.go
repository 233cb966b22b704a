// Command crashclient creates transfers (zerohash) or invoices (Chift)
// concurrently so that a test can kill it mid-flight, then finishes the
// same work in a new process. It demonstrates the one rule an application
// must follow for a create to happen exactly once across a crash:
//
//  1. Decide the key first (zerohash: the client_transfer_id; Chift: the
//     X-Chift-Client-RequestId) and persist it, durably (written and
//     fsynced), with the time it is first sent, BEFORE the request can
//     leave the process. Keep with it whatever rebuilds the same request
//     body: here the body is a function of the key; in an application it
//     is the business record the key belongs to. A key that was never
//     persisted belongs to a request that was never sent.
//  2. On restart, for every persisted key whose outcome was not recorded,
//     call Create again with the same key and the same body:
//     zerohash: Transfers.Create with ClientTransferID and FirstSentAt
//     from the journal, so that Create looks the id up before it posts
//     again and refuses to repost once zerohash's 72 h uniqueness window
//     may have passed (finish within 72 h, less Create's one-hour margin);
//     Chift: Chift.Create with the same RequestID, which Chift answers 409
//     REQUEST_IN_PROCESS or REQUEST_ALREADY_PROCESSED when the first
//     request got through; Create then reads the entity id from the
//     monitoring log, which must still hold the request (finish within
//     Chift's 6-month log retention).
//
// A new key on restart would create a second entity for every request
// that reached the server before the crash.
//
// Usage:
//
//	crashclient -api zerohash|chift -url URL -journal FILE [-n N] [-workers W] [-resume]
//
// Without -resume it creates N entities with the keys crash-<api>-<i>,
// appending "<key> <RFC3339Nano first-sent time>" to the journal before
// each one is sent. With -resume it reads the journal and calls Create
// again for every key in it. Every finished create prints
// "done <key> <entity id> <outcome>"; a failed one prints
// "fail <key> <error>". The exit status is 0 only if every create
// finished; an outcome still unknown is a failure.
//
// Credentials come from the environment: ZEROHASH_API_KEY,
// ZEROHASH_API_SECRET (base64) and ZEROHASH_PASSPHRASE; or
// CHIFT_CLIENT_ID, CHIFT_CLIENT_SECRET, CHIFT_ACCOUNT_ID,
// CHIFT_CONSUMER_ID and CHIFT_CONNECTION_ID.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

func main() {
	api := flag.String("api", "", "zerohash or chift")
	baseURL := flag.String("url", "", "the API's base URL")
	journalPath := flag.String("journal", "", "the journal file: one \"<key> <first-sent time>\" line per create")
	n := flag.Int("n", 20, "how many creates to start (without -resume)")
	workers := flag.Int("workers", 8, "how many creates run at once")
	resume := flag.Bool("resume", false, "finish the creates the journal lists")
	timeout := flag.Duration("timeout", time.Minute, "the time allowed for the whole run")
	flag.Parse()
	if *baseURL == "" || *journalPath == "" || *n < 0 || *workers < 1 {
		fatalf("-url and -journal are required; -n must be >= 0 and -workers >= 1")
	}
	creator, err := newCreator(*api, *baseURL)
	if err != nil {
		fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var jobs []job
	var jnl *journal
	if *resume {
		jobs, err = readJournal(*journalPath)
	} else {
		jnl, err = openJournal(*journalPath)
		for i := range *n {
			jobs = append(jobs, job{key: fmt.Sprintf("crash-%s-%d", *api, i)})
		}
	}
	if err != nil {
		fatalf("%v", err)
	}
	if !run(ctx, creator, jnl, jobs, *workers) {
		os.Exit(1)
	}
}

// job is one create: its key and, when resumed, when it was first sent.
type job struct {
	key       string
	firstSent time.Time
}

// run does every job with the given number of workers; jnl, when not nil,
// receives each key before its create is sent. It reports whether all
// finished.
func run(ctx context.Context, c creator, jnl *journal, jobs []job, workers int) bool {
	var (
		out    sync.Mutex
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	queue := make(chan job)
	report := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // unbuffered: each line is out before the next create
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				// The first send leaves j.firstSent zero: there is
				// nothing to resume yet.
				if jnl != nil {
					if err := jnl.add(j.key, time.Now()); err != nil {
						// Not persisted, so it must not be sent.
						report("fail %s journal: %v", j.key, oneLine(err))
						failed.Store(true)
						continue
					}
				}
				entity, outcome, err := c.create(ctx, j)
				if err != nil {
					report("fail %s %v", j.key, oneLine(err))
					failed.Store(true)
					continue
				}
				report("done %s %s %s", j.key, entity, outcome)
			}
		}()
	}
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	wg.Wait()
	return !failed.Load()
}

// journal appends one fsynced line per key.
type journal struct {
	mu sync.Mutex
	f  *os.File
}

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &journal{f: f}, nil
}

// add returns once the line is on disk: only then may the create be sent.
func (j *journal) add(key string, firstSent time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := fmt.Fprintf(j.f, "%s %s\n", key, firstSent.UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	return j.f.Sync()
}

// readJournal returns the journaled keys, each once, with its earliest
// first-sent time. A last line without its newline was cut by the crash
// while being written: its create was never sent, so it is skipped.
func readJournal(path string) ([]job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
		fmt.Fprintf(os.Stderr, "crashclient: skipping the torn last journal line %q\n", data[i+1:])
		data = data[:i+1]
	}
	var jobs []job
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		key, stamp, ok := strings.Cut(sc.Text(), " ")
		sent, err := time.Parse(time.RFC3339Nano, stamp)
		if !ok || err != nil || saferetry.ValidateKey(key) != nil {
			return nil, fmt.Errorf("journal line %d: want \"<key> <RFC3339Nano time>\", got %q", line, sc.Text())
		}
		if i, dup := seen[key]; dup {
			if sent.Before(jobs[i].firstSent) {
				jobs[i].firstSent = sent
			}
			continue
		}
		seen[key] = len(jobs)
		jobs = append(jobs, job{key: key, firstSent: sent})
	}
	return jobs, sc.Err()
}

// creator runs one create against one API.
type creator interface {
	create(ctx context.Context, j job) (entityID, outcome string, err error)
}

func newCreator(api, baseURL string) (creator, error) {
	switch api {
	case "zerohash":
		c, err := saferetry.NewClient(baseURL, saferetry.WithZeroHashAuth(
			os.Getenv("ZEROHASH_API_KEY"), os.Getenv("ZEROHASH_API_SECRET"), os.Getenv("ZEROHASH_PASSPHRASE")))
		if err != nil {
			return nil, err
		}
		return zeroHash{c}, nil
	case "chift":
		c, err := saferetry.NewClient(baseURL, saferetry.WithChiftAuth(saferetry.ChiftCredentials{
			ClientID: os.Getenv("CHIFT_CLIENT_ID"), ClientSecret: os.Getenv("CHIFT_CLIENT_SECRET"),
			AccountID: os.Getenv("CHIFT_ACCOUNT_ID"),
		}))
		if err != nil {
			return nil, err
		}
		return chift{c: c, consumer: os.Getenv("CHIFT_CONSUMER_ID"), connection: os.Getenv("CHIFT_CONNECTION_ID")}, nil
	}
	return nil, fmt.Errorf("-api %q: want zerohash or chift", api)
}

// indexOf is the number a key ends in; the request body is derived from
// it, so a resumed create sends the same body as the first one.
func indexOf(key string) int {
	n, _ := strconv.Atoi(key[strings.LastIndexByte(key, '-')+1:])
	return n
}

type zeroHash struct{ c *saferetry.Client }

func (z zeroHash) create(ctx context.Context, j job) (string, string, error) {
	tr, err := z.c.Transfers.Create(ctx, saferetry.TransferRequest{
		ClientTransferID:    j.key,
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: fmt.Sprintf("%d.25", indexOf(j.key)+1),
		FirstSentAt: j.firstSent, // zero on the first send
	})
	if err != nil {
		return "", "", err
	}
	return strconv.FormatInt(tr.ID, 10), tr.Outcome.String(), nil
}

type chift struct {
	c                    *saferetry.Client
	consumer, connection string
}

func (ch chift) create(ctx context.Context, j job) (string, string, error) {
	created, err := ch.c.Chift.Create(ctx, saferetry.ChiftCreate{
		Path: "consumers/" + ch.consumer + "/invoicing/invoices",
		// No invoice_number: a duplicate would then be refused by the
		// accounting system and hide a second create from the count.
		Body:       map[string]any{"reference": j.key, "total": indexOf(j.key) + 1},
		ConsumerID: ch.consumer, ConnectionID: ch.connection,
		RequestID: j.key,
	})
	if err != nil {
		return "", "", err
	}
	outcome := "created"
	if created.Recovered {
		outcome = "recovered"
	}
	if created.EntityID == "" {
		return "", "", errors.New("the create answered no entity id")
	}
	return created.EntityID, outcome, nil
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crashclient: "+format+"\n", args...)
	os.Exit(2)
}
