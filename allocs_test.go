//go:build !race

// The race detector changes allocation counts (sync.Pool drops items at
// random under it), so these counts are checked without it.

package saferetry

import (
	"net/http"
	"testing"
	"unsafe"
)

// maxOwnAllocs is what a stamped POST may allocate beyond the base
// transport and the caller's request: the call record, the header copy
// that carries the key (its map and its group), the two httptrace hooks,
// and the first attempt's body from the caller's GetBody (a reader and its
// NopCloser). Keys come 16 to an allocation. BENCHMARKS.md gives the
// account.
const maxOwnAllocs = 7

func TestRoundTripAllocations(t *testing.T) {
	tr, err := NewTransport(okTransport{})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(rt http.RoundTripper) func() {
		return func() {
			resp, err := rt.RoundTrip(benchRequest())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	base := testing.AllocsPerRun(1000, roundTrip(okTransport{}))
	stamped := testing.AllocsPerRun(1000, roundTrip(tr))
	if own := stamped - base; own > maxOwnAllocs {
		t.Errorf("a stamped POST allocates %.2f times beyond the base's %.0f, want at most %d", own, base, maxOwnAllocs)
	}
}

// The call record is allocated for every request: past 760 bytes, with
// the 8-byte header the allocator gives objects over 512 bytes, it would
// move up from the 768-byte size class to 896.
func TestCallRecordSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(call{}); size > 760 {
		t.Errorf("call is %d bytes, more than 760", size)
	}
}
