package saferetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponseBody bounds how much of a successful response Client.Do
// decodes.
const maxResponseBody = 16 << 20

// Client is a JSON API client over an http.Client wrapped by a Transport.
// Make one with NewClient: the zero Client has no services and no
// transport, and its methods panic.
type Client struct {
	// Transfers is zerohash's transfers API, with exactly-once Create.
	Transfers *TransfersService
	// Chift is Chift's monitoring lookup and creates that survive a lost
	// response.
	Chift *ChiftService

	baseURL    *url.URL
	httpClient *http.Client
	transport  *Transport
}

// NewClient returns a client for the API at baseURL (absolute http or https
// URL; its path, if any, prefixes every request path). The options configure
// the Transport; WithHTTPClient chooses the client to wrap.
func NewClient(baseURL string, opts ...Option) (*Client, error) {
	base, err := parseBaseURL("NewClient", baseURL)
	if err != nil {
		return nil, err
	}
	cfg, err := newConfig("NewClient", append(opts[:len(opts):len(opts)], withAPIOrigin(base)))
	if err != nil {
		return nil, err
	}
	hc, t, err := wrap(cfg.httpClient, cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{baseURL: base, httpClient: hc, transport: t}
	c.Transfers = &TransfersService{client: c}
	c.Chift = &ChiftService{client: c}
	return c, nil
}

// parseBaseURL checks an API base URL; who names the caller in errors.
func parseBaseURL(who, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the raw URL, password included; keep only the cause.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return nil, fmt.Errorf("saferetry: %s: base URL is not a valid URL: %v", who, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("saferetry: %s: base URL %q must be an absolute http or https URL", who, redactedURL(u))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("saferetry: %s: base URL %q must not carry user info, a query or a fragment", who, redactedURL(u))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Protocol names the API preset the client was made with: "chift"
// (WithChift), "zerohash" (WithZeroHashRequestID), or "" for neither. A
// layer above the client (the saferiver module's workers) checks it before
// it sends a create by the other API's recipe.
func (c *Client) Protocol() string { return c.transport.protocol() }

func (t *Transport) protocol() string {
	for _, ch := range t.cfg.protocols {
		if ch.protocol == "chift" || ch.protocol == "zerohash" {
			return ch.protocol
		}
	}
	return ""
}

// requireAPI refuses, before anything is sent, a call of one API's
// service (call names it, e.g. "Chift.Create") on a client that was not
// made for that API: its key header, signing and retry rules are the
// other's, and the request would reach the wrong server. api is "chift"
// or "zerohash".
func (c *Client) requireAPI(call, api string) error {
	if c == nil || c.transport == nil {
		return fmt.Errorf("saferetry: %s: the Client was not made by NewClient", call)
	}
	got := c.Protocol()
	if got == api {
		return nil
	}
	made := "for neither API (no WithChift, WithChiftAuth, WithZeroHashRequestID nor WithZeroHashAuth)"
	if got != "" {
		made = "for " + got
	}
	how := "NewClient(chiftURL, saferetry.WithChiftAuth(credentials)), or WithChift() when another layer authenticates"
	if api == "zerohash" {
		how = "NewClient(zerohashURL, saferetry.WithZeroHashAuth(apiKey, secret, passphrase)), or WithZeroHashRequestID() when another layer signs"
	}
	return fmt.Errorf("saferetry: %s: this client was made %s; %s calls need a client made with %s", call, made, api, how)
}

// HTTPClient returns the wrapped http.Client the client sends through, for
// requests the typed helpers do not cover.
func (c *Client) HTTPClient() *http.Client { return c.httpClient }

// BaseURL returns a copy of the base URL.
func (c *Client) BaseURL() *url.URL {
	u := *c.baseURL
	return &u
}

// NewRequest builds a request for path (relative to the base URL, with an
// optional query) with body marshalled as JSON; nil body sends none. The
// body is in memory with GetBody set, so every retry resends the same bytes.
func (c *Client) NewRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	u, err := c.resolve(path)
	if err != nil {
		return nil, err
	}
	var reader io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("saferetry: encoding request body: %w", err)
		}
		reader = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), reader)
	if err != nil {
		return nil, fmt.Errorf("saferetry: %w", redactError(err))
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (c *Client) resolve(path string) (*url.URL, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("saferetry: path %q: %w", redactRawURL(path), redactError(err))
	}
	if ref.Scheme != "" || ref.Host != "" || ref.User != nil {
		return nil, fmt.Errorf("saferetry: path %q must be relative to the base URL", redactedURL(ref))
	}
	for _, seg := range strings.Split(ref.Path, "/") {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("saferetry: path %q must not hold dot segments", redactedURL(ref))
		}
	}
	u := *c.baseURL
	u.Path = u.Path + "/" + strings.TrimPrefix(ref.Path, "/")
	u.RawPath = c.baseURL.EscapedPath() + "/" + strings.TrimPrefix(ref.EscapedPath(), "/")
	u.RawQuery = ref.RawQuery
	return &u, nil
}

// Do sends req and decodes a 2xx JSON answer into out (nil: discard). A
// non-2xx answer is returned as an *APIError, and the transport's typed
// errors pass through, so errors.Is and errors.As work on the result; the
// URL in the error has its query values redacted. A 2xx answer to a keyed
// request whose body cannot be read or decoded is an *OutcomeError
// (ErrOutcomeUnknown with the key): the request succeeded, its answer did
// not arrive. The response is returned with its body consumed and closed.
func (c *Client) Do(req *http.Request, out any) (*http.Response, error) {
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, redactError(err)
	}
	defer drainAndClose(resp.Body)
	if err := CheckResponse(resp); err != nil {
		return resp, err
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return resp, nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody))
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("saferetry: decoding %s %s response: %w", req.Method, redactURL(req), err)
		if key := KeyFromResponse(resp); key != "" {
			// The request succeeded; only its answer is lost. Reported as a
			// failure, it would invite a retry under a new key.
			return resp, &OutcomeError{Key: key, Reason: fmt.Sprintf("the server answered %d but its body could not be read", resp.StatusCode), Err: err}
		}
		return resp, err
	}
	return resp, nil
}

// DoJSON builds a request with NewRequest and sends it with Do.
func (c *Client) DoJSON(ctx context.Context, method, path string, in, out any) (*http.Response, error) {
	req, err := c.NewRequest(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	return c.Do(req, out)
}
