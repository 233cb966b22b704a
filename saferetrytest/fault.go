package saferetrytest

import (
	"fmt"
	"maps"
	"net/http"
	"strconv"
)

// Fault is what the server does to one create request instead of (or around)
// normal processing.
type Fault int

const (
	// FaultNone processes the request and answers normally.
	FaultNone Fault = iota
	// FaultDropBeforeProcessing closes the TCP connection without processing
	// and without a response.
	FaultDropBeforeProcessing
	// FaultDropAfterProcessing processes the request (the entity is created,
	// the key recorded), then closes the connection without a response.
	FaultDropAfterProcessing
	// FaultSlowCommit holds the key "in process" for ChiftServer.SlowDelay,
	// then processes and answers normally.
	FaultSlowCommit
	// FaultResetMidBody processes the request, writes the response head and
	// half of the JSON body, then closes the connection.
	FaultResetMidBody
	// FaultInternalError answers 500 with an HTML page; not processed.
	FaultInternalError
	// FaultBadGateway answers 502 with a proxy's HTML error page; not processed.
	FaultBadGateway
	// FaultUnavailable answers 503 with an HTML page; not processed.
	FaultUnavailable
	// FaultRateLimited answers 429 with Retry-After and a JSON Chift error;
	// not processed.
	FaultRateLimited
	// FaultGatewayTimeout answers 504 with a proxy's HTML page; not
	// processed (the proxy gave up before the API saw the request).
	FaultGatewayTimeout
	// FaultInProcess answers Chift's 409 REQUEST_IN_PROCESS as if another
	// request with the key were being processed; not processed, and the
	// key is not recorded. A run of them is a burst the client must wait
	// out. The zerohash server has no such answer and ignores it.
	FaultInProcess
)

var faultNames = [...]string{
	FaultNone:                 "none",
	FaultDropBeforeProcessing: "drop-before",
	FaultDropAfterProcessing:  "drop-after",
	FaultSlowCommit:           "slow-commit",
	FaultResetMidBody:         "reset-mid-body",
	FaultInternalError:        "500",
	FaultBadGateway:           "502",
	FaultUnavailable:          "503",
	FaultRateLimited:          "429",
	FaultGatewayTimeout:       "504",
	FaultInProcess:            "409-in-process",
}

func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "Fault(" + strconv.Itoa(int(f)) + ")"
}

// beforeProcessing reports whether the fault strikes before the request is
// processed, so that neither an entity nor the key is recorded. Unknown
// values process normally, like FaultNone.
func (f Fault) beforeProcessing() bool {
	switch f {
	case FaultDropBeforeProcessing, FaultInternalError, FaultBadGateway,
		FaultUnavailable, FaultRateLimited, FaultGatewayTimeout, FaultInProcess:
		return true
	}
	return false
}

// proxyStatus holds the faults a proxy in front of the API would answer.
var proxyStatus = map[Fault]int{
	FaultInternalError:  http.StatusInternalServerError,
	FaultBadGateway:     http.StatusBadGateway,
	FaultUnavailable:    http.StatusServiceUnavailable,
	FaultGatewayTimeout: http.StatusGatewayTimeout,
}

// reply is a response decided in full before any byte is sent, so that
// Requests is up to date by the time the client sees the answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	fault  Fault // how sending is damaged
}

func (r reply) drops() bool {
	return r.fault == FaultDropBeforeProcessing || r.fault == FaultDropAfterProcessing
}

// written is the status the client can see, 0 when nothing is sent.
func (r reply) written() int {
	if r.drops() {
		return 0
	}
	return r.status
}

func (r reply) send(w http.ResponseWriter) {
	switch {
	case r.drops():
		dropConnection(w)
	case r.fault == FaultResetMidBody:
		writeTruncated(w, r)
	default:
		maps.Copy(w.Header(), r.header)
		w.WriteHeader(r.status)
		w.Write(r.body)
	}
}

// refusal is the reply to a fault that strikes before processing.
func (s *ChiftServer) refusal(f Fault, key string) reply {
	switch f {
	case FaultDropBeforeProcessing:
		return reply{fault: f}
	case FaultRateLimited:
		return rateLimited(s.RetryAfterSeconds)
	case FaultInProcess:
		return jsonReply(http.StatusConflict, inProcess(key))
	}
	return proxyPage(proxyStatus[f])
}

// dropConnection takes the connection away from net/http so that no response
// at all is written; a hijacked connection is also forgotten by
// httptest.Server, so Close does not wait for it.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // still drops the connection, silently
	}
	conn.Close()
}

// writeTruncated promises the whole body in Content-Length but sends half, so
// the client has a status and headers and then fails while reading the body.
func writeTruncated(w http.ResponseWriter, r reply) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", r.status, http.StatusText(r.status))
	r.header.Write(buf)
	fmt.Fprintf(buf, "Content-Length: %d\r\n\r\n", len(r.body))
	buf.Write(r.body[:len(r.body)/2])
	buf.Flush()
}

// proxyPage answers like nginx in front of an API: HTML, not JSON, so that a
// client which insists on a JSON error body is caught out.
func proxyPage(status int) reply {
	title := fmt.Sprintf("%d %s", status, http.StatusText(status))
	page := fmt.Sprintf("<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n"+
		"<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
		title, title)
	return reply{status: status, header: http.Header{"Content-Type": {"text/html"}}, body: []byte(page)}
}

// rateLimited answers 429. Chift's documents name neither the status nor the
// error code of a rate-limit error, so both are this fake's invention.
func rateLimited(seconds int) reply {
	r := jsonReply(http.StatusTooManyRequests, chiftError{
		Status:    "error",
		Message:   fmt.Sprintf("Rate limit reached, retry in %d seconds", seconds),
		ErrorCode: "ERROR_RATE_LIMIT",
	})
	r.header.Set("Retry-After", strconv.Itoa(seconds))
	return r
}

func jsonReply(status int, v any) reply {
	return reply{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: marshal(v)}
}
