package matrix

import (
	"math/rand/v2"

	"golang.org/x/net/http2"
)

// fault is what the server does to one attempt instead of, or after,
// answering it normally.
type fault int

const (
	noFault    fault = iota
	dropBefore       // the connection is closed, nothing processed
	dropAfter        // processed, then the connection is closed without an answer
	slowAnswer       // processed, answered long after the bound
	status500
	status502
	status503
	status429
	status401 // Chift: the token was refused, nothing processed
	rstProtocolBefore
	rstProtocolAfter
	rstInternalBefore
	rstInternalAfter
	rstCancelBefore
	rstCancelAfter
	rstRefused  // REFUSED_STREAM: by RFC 9113 the stream was not processed
	goAwayBelow // GOAWAY with a last stream id below the stream: not processed
	goAwayAt    // processed, GOAWAY with the last stream id at the stream, connection closed
	goneAway    // not drawn: the stream was refused by a GOAWAY sent for another one
)

type faultSpec struct {
	name   string
	status int           // answered with this status, nothing processed
	before bool          // fails the attempt before processing
	reset  bool          // HTTP/2: RST_STREAM with code
	code   http2.ErrCode // the RST_STREAM code
	// definite: the client is told, by the status or by the protocol, that
	// nothing was processed. Every other fault leaves the client unable to
	// know, so an error after it must say the outcome is unknown.
	definite bool
}

var faultSpecs = [...]faultSpec{
	noFault:           {name: "none"},
	dropBefore:        {name: "drop-before", before: true},
	dropAfter:         {name: "drop-after"},
	slowAnswer:        {name: "slow"},
	status500:         {name: "500", status: 500},
	status502:         {name: "502", status: 502},
	status503:         {name: "503", status: 503, definite: true},
	status429:         {name: "429", status: 429, definite: true},
	status401:         {name: "401", status: 401, definite: true},
	rstProtocolBefore: {name: "rst-protocol-before", before: true, reset: true, code: http2.ErrCodeProtocol},
	rstProtocolAfter:  {name: "rst-protocol-after", reset: true, code: http2.ErrCodeProtocol},
	rstInternalBefore: {name: "rst-internal-before", before: true, reset: true, code: http2.ErrCodeInternal},
	rstInternalAfter:  {name: "rst-internal-after", reset: true, code: http2.ErrCodeInternal},
	rstCancelBefore:   {name: "rst-cancel-before", before: true, reset: true, code: http2.ErrCodeCancel},
	rstCancelAfter:    {name: "rst-cancel-after", reset: true, code: http2.ErrCodeCancel},
	rstRefused:        {name: "rst-refused", before: true, reset: true, code: http2.ErrCodeRefusedStream, definite: true},
	goAwayBelow:       {name: "goaway-below", before: true, definite: true},
	goAwayAt:          {name: "goaway-at"},
	goneAway:          {name: "refused-by-goaway", before: true, definite: true},
}

func (f fault) String() string  { return faultSpecs[f].name }
func (f fault) spec() faultSpec { return faultSpecs[f] }

// faultRate is the share of attempts that meet a fault.
const faultRate = 0.4

// drawFault draws the fault of one attempt from the operation's own
// generator, so an operation meets the same faults whatever order the
// workers reach the server in.
func drawFault(rng *rand.Rand, kinds []fault) fault {
	if rng.Float64() >= faultRate {
		return noFault
	}
	return kinds[rng.IntN(len(kinds))]
}
