package saferetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

var uuidV4Text = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// Keys stamped by Transports on the wire, from many goroutines, with the
// pool emptied by GC between requests: every key is a lower-case UUIDv4,
// each logical request has its own, and every random nibble position
// takes all 16 values (no position stuck, e.g. by an encoder slip).
func TestStampedKeysUniqueAcrossGoroutinesAndGC(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		k := r.Header.Get(ChiftRequestIDHeader)
		if k == "" {
			k = r.Header.Get(ZeroHashRequestIDHeader)
		}
		mu.Lock()
		seen[k]++
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	trChift := newTestTransport(t, srv.Client().Transport, WithChift())
	trZH := newTestTransport(t, srv.Client().Transport, WithZeroHashRequestID())
	const goroutines, per = 32, 60
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			tr := trChift
			if g%2 == 1 {
				tr = trZH
			}
			for i := range per {
				if i%7 == g%7 {
					runtime.GC() // empties the pool's victim cache on the next cycle
				}
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, strings.NewReader(`{}`))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		})
	}
	// interleave direct key generation too (transfers/chift ids use it)
	direct := make([]string, 0, 4000)
	for i := range 4000 {
		if i%100 == 0 {
			runtime.GC()
			runtime.GC()
		}
		k, err := newUUIDKey()
		if err != nil {
			t.Fatal(err)
		}
		direct = append(direct, k)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, k := range direct {
		seen[k]++
	}
	if len(seen) != goroutines*per+len(direct) {
		t.Errorf("%d distinct keys, want %d", len(seen), goroutines*per+len(direct))
	}
	var pos [36][16]bool
	for k, n := range seen {
		if n != 1 {
			t.Errorf("key %q used by %d requests", k, n)
		}
		if !uuidV4Text.MatchString(k) {
			t.Fatalf("key %q is not a lower-case canonical UUIDv4", k)
		}
		for i := 0; i < 36; i++ {
			c := k[i]
			switch {
			case c >= '0' && c <= '9':
				pos[i][c-'0'] = true
			case c >= 'a' && c <= 'f':
				pos[i][c-'a'+10] = true
			}
		}
	}
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 || i == 14 || i == 19 {
			continue
		}
		for v := 0; v < 16; v++ {
			if !pos[i][v] {
				t.Errorf("position %d never holds hex digit %x over %d keys", i, v, len(seen))
			}
		}
	}
}

// encodeUUID against uuid.UUID.String for edge byte values.
func TestEncodeUUIDMatchesLibrary(t *testing.T) {
	for _, fill := range []byte{0x00, 0xff, 0x0f, 0xf0, 0xa5, 0x5a} {
		var u [16]byte
		for i := range u {
			u[i] = fill ^ byte(i*17)
		}
		var dst [36]byte
		encodeUUID(dst[:], u)
		if want := uuid.UUID(u).String(); string(dst[:]) != want {
			t.Errorf("encodeUUID(%x) = %s, want %s", u, dst[:], want)
		}
	}
}
