package matrix

import (
	"bytes"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// opRecord is one logical operation: what the server saw of it and what
// its caller got.
type opRecord struct {
	id      string
	payload []byte

	mu        sync.Mutex
	rng       *rand.Rand
	arrivals  []*arrival
	processed int // times the payload was applied
	corrupt   int // complete requests whose body was not the payload
	refused   int // attempts whose credentials the server refused
	bodies    []*countingBody

	// The caller's side, written once by the worker that ran the call.
	got result
}

// arrival is one attempt as the server saw it.
type arrival struct {
	key    string // the preset's key header as it arrived
	fault  fault
	result string // what the server did, for the messages
}

// result is what the call returned to its caller.
type result struct {
	status   int    // 0 when the call returned an error
	err      error  // from http.Client.Do
	answerOp string // the op a 2xx answer names
	readErr  error  // reading the answer
	returned bool
}

func (op *opRecord) note(at *arrival, what string, count func()) {
	op.mu.Lock()
	defer op.mu.Unlock()
	at.result = what
	if count != nil {
		count()
	}
}

func (op *opRecord) setFault(at *arrival, f fault) {
	op.mu.Lock()
	defer op.mu.Unlock()
	at.fault = f
}

func (op *opRecord) faultOf(at *arrival) fault {
	op.mu.Lock()
	defer op.mu.Unlock()
	return at.fault
}

// newBody is a fresh counting reader over the payload: the request's body
// and everything GetBody hands out.
func (op *opRecord) newBody() *countingBody {
	b := &countingBody{r: bytes.NewReader(op.payload)}
	op.mu.Lock()
	op.bodies = append(op.bodies, b)
	op.mu.Unlock()
	return b
}

// rewoundBody is what GetBody hands out; it remembers who asked for it,
// for the message if it is never closed.
func (op *opRecord) rewoundBody() *countingBody {
	b := op.newBody()
	b.fromGetBody, b.obtainedBy = true, caller()
	return b
}

// caller names the first function outside this package up the stack.
func caller() string {
	pcs := make([]uintptr, 16)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !strings.Contains(f.Function, "saferetry-go/matrix.") {
			return f.Function
		}
		if !more {
			return "?"
		}
	}
}

// countingBody is a request body that counts its Closes. Its type is its
// own, so http.NewRequest cannot recognise it and set GetBody.
type countingBody struct {
	r           io.Reader
	closes      atomic.Int32
	fromGetBody bool
	obtainedBy  string // the function that called GetBody
}

func (b *countingBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *countingBody) Close() error {
	b.closes.Add(1)
	return nil
}
