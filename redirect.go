package saferetry

import (
	"cmp"
	"errors"
	"net/http"
)

// hop is what a request http.Client sends to follow a redirect inherits
// from the request whose answer it follows. http.Client builds the new
// request from the caller's, with the caller's headers, not the
// Transport's: without this, a 307 would go out under a new key, and the
// failure of a 303's GET would hide that the POST before it may have been
// processed.
type hop struct {
	// same: the call that got a 307 or 308, which this request repeats
	// (same method, same body): the same key, the same history.
	same *call
	// origin: the key of the earlier keyed request in the chain, which may
	// have been processed (a 303's POST); this request's failures and error
	// statuses are reported under it, as ErrOutcomeUnknown.
	origin string
}

// hopOf reads the redirect req follows, if it follows one that went
// through a Transport.
func hopOf(req *http.Request) hop {
	if req.Response == nil || req.Response.Request == nil {
		return hop{}
	}
	prev, ok := req.Response.Request.Context().Value(callInfoKey{}).(*call)
	if !ok {
		return hop{}
	}
	if prev.key != "" && prev.req.Method == req.Method {
		return hop{same: prev, origin: prev.origin}
	}
	return hop{origin: cmp.Or(prev.origin, prev.key)}
}

// inherit carries the history of the chain into c: a repeat of the same
// request starts where it stopped; any later request reports under the
// chain's first key.
func (c *call) inherit(h hop, origin string) {
	c.origin = origin
	if h.same != nil {
		c.origin = h.same.origin
		c.maybeSent, c.unanswered = h.same.maybeSent, h.same.unanswered
	}
}

// checkRedirect wraps the caller's redirect policy (nil: net/http's, at
// most 10 redirects). When it stops a redirect that answered a keyed
// request, http.Client hands back the redirect response with its error:
// the error is made to say that the request may have been processed, under
// its key.
func checkRedirect(policy func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		err := defaultRedirectPolicy(req, via)
		if policy != nil {
			err = policy(req, via)
		}
		if err == nil || errors.Is(err, http.ErrUseLastResponse) {
			return err
		}
		var key, requestID string
		if req.Response != nil && req.Response.Request != nil {
			key, requestID = keysOfRequest(req.Response.Request)
		}
		if key == "" && requestID == "" {
			return err
		}
		return &RequestError{Method: via[0].Method, URL: redactURL(via[0]), Key: key, RequestID: requestID, Attempts: len(via), MaybeSent: true, Err: err}
	}
}

// defaultRedirectPolicy is net/http's: at most 10 redirects.
func defaultRedirectPolicy(_ *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}
