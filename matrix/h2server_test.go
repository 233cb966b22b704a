package matrix

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Server is a small HTTP/2 server driven frame by frame with x/net's
// Framer, so that it can misbehave on purpose: it reads the client preface
// and frames, decides each stream's fault when its HEADERS arrive, processes
// the request when its END_STREAM arrives, and then answers (HEADERS with an
// hpack-encoded :status, then DATA), resets the stream, sends GOAWAY or
// drops the connection.
type h2Server struct {
	api *fakeAPI
	wg  sync.WaitGroup

	mu     sync.Mutex
	ln     net.Listener
	conns  map[*h2Conn]struct{}
	closed bool
}

func newH2Server(api *fakeAPI) *h2Server {
	return &h2Server{api: api, conns: map[*h2Conn]struct{}{}}
}

func (s *h2Server) listen(ln net.Listener) {
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serveConn(nc)
		}
	}()
}

// serveConn runs one connection until it ends.
func (s *h2Server) serveConn(nc net.Conn) {
	c := &h2Conn{srv: s, api: s.api, nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc),
		streams: map[uint32]*h2Stream{}, done: make(chan struct{})}
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		close(c.done)
		nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c.run()
}

func (s *h2Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

// close ends every connection and waits for them and their held answers.
func (s *h2Server) close() {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.closeConns()
	s.wg.Wait()
}

type h2Conn struct {
	srv  *h2Server
	api  *fakeAPI
	nc   net.Conn
	br   *bufio.Reader
	fr   *http2.Framer
	done chan struct{} // closed when the connection ends

	wmu  sync.Mutex // one writer at a time: the framer, the encoder, bw
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	// The read loop's own state.
	streams    map[uint32]*h2Stream
	maxServed  uint32 // highest stream the server processed or answered
	goneAway   bool
	lastStream uint32 // the GOAWAY's last stream id
}

type h2Stream struct {
	id     uint32
	method string
	path   string
	header http.Header
	body   bytes.Buffer
	op     *opRecord // nil for the token endpoint
	at     *arrival
	reset  chan struct{} // closed when the client resets the stream
}

func (c *h2Conn) run() {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	c.write(func() error { return c.fr.WriteSettings() })
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(c.fr.WriteSettingsAck)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.MetaHeadersFrame:
			c.open(f)
		case *http2.DataFrame:
			c.data(f)
		case *http2.RSTStreamFrame:
			c.clientReset(f.StreamID)
		case *http2.GoAwayFrame:
			return
		}
	}
}

func (c *h2Conn) open(f *http2.MetaHeadersFrame) {
	h := http.Header{}
	for _, hf := range f.RegularFields() {
		h.Add(hf.Name, hf.Value)
	}
	st := &h2Stream{id: f.StreamID, method: f.PseudoValue("method"), path: f.PseudoValue("path"), header: h, reset: make(chan struct{})}
	if st.path != tokenPath {
		if st.op, st.at = c.api.arrive(h); st.op == nil {
			c.rst(st.id, http2.ErrCodeRefusedStream)
			return
		}
	}
	if c.goneAway && st.id > c.lastStream {
		// Sent before the client read the GOAWAY: not processed, and the
		// client was told so.
		if st.op != nil {
			st.op.setFault(st.at, goneAway)
			st.op.note(st.at, "refused by GOAWAY", nil)
		}
		return
	}
	c.streams[st.id] = st
	if f.StreamEnded() {
		c.end(st)
	}
}

func (c *h2Conn) data(f *http2.DataFrame) {
	if n := f.Length; n > 0 {
		c.write(func() error {
			if !f.StreamEnded() {
				c.fr.WriteWindowUpdate(f.StreamID, n)
			}
			return c.fr.WriteWindowUpdate(0, n)
		})
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return // a stream refused or reset
	}
	st.body.Write(f.Data())
	if f.StreamEnded() {
		c.end(st)
	}
}

func (c *h2Conn) clientReset(id uint32) {
	st := c.streams[id]
	if st == nil {
		return
	}
	delete(c.streams, id)
	close(st.reset)
	if st.op != nil {
		st.op.note(st.at, "reset by the client before the request ended", nil)
	}
}

// end acts on a complete request: the fault drawn for it decides how.
func (c *h2Conn) end(st *h2Stream) {
	delete(c.streams, st.id)
	if st.op == nil {
		c.maxServed = max(c.maxServed, st.id)
		c.answer(st, c.api.token(st.body.Bytes()))
		return
	}
	f := st.op.faultOf(st.at)
	if f == goAwayBelow && c.maxServed > st.id {
		// A stream after this one was served already: a last stream id
		// below this one would lie about it. Say "at" instead.
		f = goAwayAt
		st.op.setFault(st.at, f)
	}
	spec := f.spec()
	switch {
	case f == goAwayBelow:
		st.op.note(st.at, "refused by GOAWAY", nil)
		c.goAway(c.maxServed)
		return
	case f == dropBefore:
		st.op.note(st.at, "connection dropped before processing", nil)
		c.nc.Close()
		return
	case spec.reset && spec.before:
		st.op.note(st.at, "reset before processing", nil)
		c.rst(st.id, spec.code)
		return
	}
	c.maxServed = max(c.maxServed, st.id)
	ans := c.api.serve(st.op, st.at, st.method, st.path, st.header, st.body.Bytes())
	switch {
	case f == dropAfter:
		c.nc.Close()
	case spec.reset:
		c.rst(st.id, spec.code)
	case f == goAwayAt:
		c.goAway(c.maxServed)
		c.nc.Close()
	case f == slowAnswer:
		c.srv.wg.Add(1)
		go func() {
			defer c.srv.wg.Done()
			c.api.hold(c.done, st.reset)
			defer c.api.settle(st.at.key)
			select {
			case <-st.reset:
			default:
				c.answer(st, ans)
			}
		}()
	default:
		c.answer(st, ans)
	}
}

// goAway tells the client that streams above last were not processed, and
// keeps that promise: those still open are dropped here.
func (c *h2Conn) goAway(last uint32) {
	c.goneAway, c.lastStream = true, last
	c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	for id, st := range c.streams {
		if id > last {
			delete(c.streams, id)
			if st.op != nil {
				st.op.setFault(st.at, goneAway)
				st.op.note(st.at, "refused by GOAWAY", nil)
			}
		}
	}
}

func (c *h2Conn) rst(id uint32, code http2.ErrCode) {
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

func (c *h2Conn) answer(st *h2Stream, ans answer) {
	c.write(func() error {
		c.hbuf.Reset()
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(ans.status)})
		for k, vs := range ans.header {
			for _, v := range vs {
				c.henc.WriteField(hpack.HeaderField{Name: strings.ToLower(k), Value: v})
			}
		}
		c.henc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(ans.body))})
		err := c.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndStream: len(ans.body) == 0, EndHeaders: true,
		})
		if err != nil || len(ans.body) == 0 {
			return err
		}
		return c.fr.WriteData(st.id, true, ans.body)
	})
}

// write runs one framer write and flushes it; a dead connection only
// makes it fail.
func (c *h2Conn) write(frame func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if frame() == nil {
		c.bw.Flush()
	}
}
