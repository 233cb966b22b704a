package matrix

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
)

// server is a cell's fake API on one protocol, and the net/http transport
// a client reaches it with.
type server struct {
	url       string
	transport *http.Transport
	close     func() // closes every connection and waits for the handlers
	abort     func() // closes every connection now (the watchdog)
}

var quiet = log.New(io.Discard, "", 0)

func startServer(p protocol, api *fakeAPI) (*server, error) {
	switch p {
	case http2TLS:
		return startH2TLS(api), nil
	case h2c:
		return startH2C(api)
	}
	return startH1(api), nil
}

// startH1: net/http's server; its faults close the connection by hijacking it.
func startH1(api *fakeAPI) *server {
	hs := httptest.NewUnstartedServer(h1Handler{api})
	hs.Config.ErrorLog = quiet
	hs.Start()
	return &server{
		url:       hs.URL,
		transport: &http.Transport{MaxIdleConnsPerHost: workersPerCell},
		close:     hs.Close,
		abort:     hs.CloseClientConnections,
	}
}

// startH2TLS: httptest's TLS server with HTTP/2 enabled, whose h2
// connections (ALPN offers h2 only) go to the framer-driven server; the
// client's transport is built from the server's certificate.
func startH2TLS(api *fakeAPI) *server {
	h2 := newH2Server(api)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.stray("an %s request in an HTTP/2 cell", r.Proto)
		w.WriteHeader(http.StatusHTTPVersionNotSupported)
	}))
	hs.EnableHTTP2 = true
	hs.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(_ *http.Server, c *tls.Conn, _ http.Handler) { h2.serveConn(c) },
	}
	hs.Config.ErrorLog = quiet
	hs.StartTLS()
	tr := hs.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	tr.MaxIdleConnsPerHost = workersPerCell
	return &server{
		url:       hs.URL,
		transport: tr,
		close: func() {
			h2.close()
			hs.Close()
		},
		abort: h2.closeConns,
	}
}

// startH2C: a cleartext listener the framer-driven server reads the
// client preface from; the client speaks HTTP/2 with prior knowledge
// (Transport.Protocols with UnencryptedHTTP2 only).
func startH2C(api *fakeAPI) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h2 := newH2Server(api)
	h2.listen(ln)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &server{
		url:       "http://" + ln.Addr().String(),
		transport: &http.Transport{Protocols: &protos, MaxIdleConnsPerHost: workersPerCell},
		close:     h2.close,
		abort:     h2.closeConns,
	}, nil
}

// h1Handler serves the fake API over HTTP/1.1.
type h1Handler struct{ api *fakeAPI }

func (h h1Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == tokenPath {
		body, _ := io.ReadAll(r.Body)
		writeAnswer(w, h.api.token(body))
		return
	}
	op, at := h.api.arrive(r.Header)
	if op == nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f := op.faultOf(at)
	if f == dropBefore {
		op.note(at, "dropped before reading the body", nil)
		hangUp(w)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		op.note(at, "body cut off: "+err.Error(), nil)
		return
	}
	ans := h.api.serve(op, at, r.Method, r.RequestURI, r.Header, body)
	switch f {
	case dropAfter:
		hangUp(w)
		return
	case slowAnswer:
		h.api.hold(r.Context().Done(), nil)
		defer h.api.settle(at.key)
	}
	writeAnswer(w, ans)
}

// hangUp closes the connection without a byte of answer.
func hangUp(w http.ResponseWriter) {
	if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
		c.Close()
	}
}

func writeAnswer(w http.ResponseWriter, ans answer) {
	for k, v := range ans.header {
		w.Header()[k] = v
	}
	w.WriteHeader(ans.status)
	w.Write(ans.body)
}
