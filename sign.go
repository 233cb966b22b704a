package saferetry

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// zerohash authentication headers. X-SCX-SIGNED, X-SCX-API-KEY and
// X-SCX-PASSPHRASE are secrets: they are never logged or put in an error.
const (
	headerAPIKey     = "X-Scx-Api-Key"
	headerPassphrase = "X-Scx-Passphrase"
	headerTimestamp  = "X-Scx-Timestamp"
	headerSigned     = "X-Scx-Signed"
)

// zeroHashSigner signs each attempt of a request to the API host with a
// fresh timestamp: zerohash refuses timestamps more than 60 s off.
type zeroHashSigner struct {
	apiKey, passphrase string
	secret             []byte
	origin             *url.URL // the only origin that gets credentials
	now                func() time.Time
	offset             atomic.Int64 // server clock minus local clock, ns
}

// WithZeroHashAuth signs every attempt, retries included, the way zerohash
// asks: X-SCX-API-KEY, X-SCX-PASSPHRASE, a fresh X-SCX-TIMESTAMP and
// X-SCX-SIGNED = base64(HMAC-SHA256(secret, timestamp+METHOD+path?query+body)),
// with "{}" as the body of a GET. It implies WithZeroHashRequestID. Only
// requests to the API's own scheme and host are signed (NewClient's base
// URL, or WithAPIBaseURL); a redirect elsewhere gets no credentials.
func WithZeroHashAuth(apiKey, base64Secret, passphrase string) Option {
	return func(c *config) error {
		if strings.TrimSpace(apiKey) == "" || strings.TrimSpace(passphrase) == "" {
			return errors.New("saferetry: WithZeroHashAuth: the API key and the passphrase must not be empty")
		}
		secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(base64Secret))
		if err != nil || len(secret) == 0 {
			return errors.New("saferetry: WithZeroHashAuth: the secret is not valid, non-empty base64")
		}
		if err := WithZeroHashRequestID()(c); err != nil {
			return err
		}
		c.protocols[len(c.protocols)-1].option = "WithZeroHashAuth"
		if c.signer != nil {
			return errors.New("saferetry: WithZeroHashAuth given twice: keep one set of credentials")
		}
		c.signer = &zeroHashSigner{apiKey: apiKey, passphrase: passphrase, secret: secret, now: time.Now}
		return nil
	}
}

// WithAPIBaseURL names the API that WithZeroHashAuth and WithChiftAuth
// send credentials to, for NewTransport and Wrap (NewClient uses its base
// URL). Requests to any other scheme or host get none.
func WithAPIBaseURL(baseURL string) Option {
	return func(c *config) error {
		u, err := parseBaseURL("WithAPIBaseURL", baseURL)
		if err != nil {
			return err
		}
		c.apiOrigin = u
		return nil
	}
}

// withAPIOrigin is NewClient's WithAPIBaseURL, from its base URL. A
// WithAPIBaseURL that names another API is refused rather than ignored.
func withAPIOrigin(u *url.URL) Option {
	return func(c *config) error {
		if c.apiOrigin != nil && c.apiOrigin.String() != u.String() {
			return fmt.Errorf("saferetry: WithAPIBaseURL %q differs from NewClient's base URL %q; NewClient sends credentials to its base URL only: drop WithAPIBaseURL", c.apiOrigin.Redacted(), u.Redacted())
		}
		c.apiOrigin = u
		return nil
	}
}

// WithZeroHashClock replaces the clock the signatures' timestamps come from
// (default time.Now), for callers that keep their own corrected time.
func WithZeroHashClock(now func() time.Time) Option {
	return func(c *config) error {
		if now == nil {
			return errors.New("saferetry: WithZeroHashClock: nil func")
		}
		c.clock = now
		return nil
	}
}

// finishAuth binds the credentials to the API's origin once all options
// are known: credentials never go anywhere else.
func (c *config) finishAuth() error {
	if c.signer == nil && c.chiftCreds == nil {
		return nil
	}
	if c.apiOrigin == nil {
		return errors.New("saferetry: WithZeroHashAuth / WithChiftAuth: no API host to send credentials to: use NewClient, or add WithAPIBaseURL")
	}
	if c.signer != nil {
		c.signer.origin = c.apiOrigin
		if c.clock != nil {
			c.signer.now = c.clock
		}
	}
	return nil
}

func (s *zeroHashSigner) applies(u *url.URL) bool { return sameOrigin(u, s.origin) }

// timestamp is the signer's idea of the server's current Unix time.
func (s *zeroHashSigner) timestamp() string {
	now := s.now().Add(time.Duration(s.offset.Load()))
	return strconv.FormatInt(now.Unix(), 10)
}

// sign returns a copy of req carrying fresh credentials. The body is read
// once to be signed and put back unchanged.
func (s *zeroHashSigner) sign(req *http.Request) (*http.Request, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = readBody(req)
		if err != nil {
			return nil, fmt.Errorf("saferetry: reading the body to sign it: %w", err)
		}
		if n := int64(len(body)); req.ContentLength > 0 && n != req.ContentLength {
			// A GetBody that gave a body of another length: signed and
			// sent, what was read would go out as the whole payload.
			return nil, &bodyLengthError{declared: req.ContentLength, read: n, hint: " when read to be signed"}
		}
	}
	signed := req.Clone(req.Context())
	if body != nil {
		signed.Body = io.NopCloser(bytes.NewReader(body))
	}
	if req.Method == http.MethodGet {
		body = []byte("{}")
	}
	ts := s.timestamp()
	signed.Header.Set(headerAPIKey, s.apiKey)
	signed.Header.Set(headerPassphrase, s.passphrase)
	signed.Header.Set(headerTimestamp, ts)
	signed.Header.Set(headerSigned, zeroHashSignature(s.secret, ts, req.Method, req.URL.RequestURI(), body))
	return signed, nil
}

// readBody reads and closes req.Body. A streamed body may stall as long
// as its writer likes, so it is read on another goroutine and a caller
// whose context ends is released at once; the body is then closed under
// the read, as net/http does when it cancels a request.
func readBody(req *http.Request) ([]byte, error) {
	body, err := readWithin(req.Context(), req.Body, -1)
	req.Body.Close()
	return body, err
}

// zeroHashSignature is base64(HMAC-SHA256(secret, ts+method+route+body)).
func zeroHashSignature(secret []byte, ts, method, route string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	io.WriteString(mac, ts+method+route)
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// setServerTime records the server's clock at local time local.
func (s *zeroHashSigner) setServerTime(server, local time.Time) time.Duration {
	offset := server.Sub(local)
	s.offset.Store(int64(offset))
	return offset
}

// SyncZeroHashClock reads zerohash's clock (GET /time) and from then on
// signs with timestamps corrected by the difference, for hosts whose clock
// is off by more than zerohash's 60 s tolerance. It returns the offset
// applied (server minus local).
func (c *Client) SyncZeroHashClock(ctx context.Context) (time.Duration, error) {
	signer := c.transport.cfg.signer
	if signer == nil {
		return 0, errors.New("saferetry: SyncZeroHashClock: the client has no WithZeroHashAuth")
	}
	sent := time.Now()
	var answer struct {
		Epoch int64 `json:"epoch"`
	}
	if _, err := c.DoJSON(ctx, http.MethodGet, "time", nil, &answer); err != nil {
		return 0, err
	}
	if answer.Epoch <= 0 {
		return 0, errors.New("saferetry: SyncZeroHashClock: GET /time gave no epoch")
	}
	received := time.Now()
	midpoint := sent.Add(received.Sub(sent) / 2)
	return signer.setServerTime(time.Unix(answer.Epoch, 0), signer.now().Add(midpoint.Sub(received))), nil
}
