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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"
)

// ChiftCredentials are what Chift's POST /token takes. String and GoString
// redact the secret, so printing the value cannot leak it.
type ChiftCredentials struct {
	ClientID     string
	ClientSecret string
	AccountID    string // a UUID
	EnvID        string // optional
}

func (c ChiftCredentials) String() string {
	return fmt.Sprintf("ChiftCredentials{ClientID:%s AccountID:%s EnvID:%s ClientSecret:[redacted]}", c.ClientID, c.AccountID, c.EnvID)
}

func (c ChiftCredentials) GoString() string { return c.String() }

// Chift access tokens live 30 minutes; one is replaced this long before it
// expires, so a request never leaves with a token about to lapse.
const (
	chiftTokenMargin  = time.Minute
	chiftTokenTimeout = 30 * time.Second
)

// WithChiftAuth authenticates to Chift: it obtains a token from POST /token
// (a JSON body, not OAuth2's form), caches it, replaces it a minute before
// it expires, fetches it once for any number of concurrent requests, and on
// a 401 fetches a new one and retries that request once. A request whose
// context ends while the token is fetched returns at once; the fetch goes
// on for the others. The token goes only to the API's own scheme and host
// (NewClient's base URL, or WithAPIBaseURL). It implies WithChift.
func WithChiftAuth(creds ChiftCredentials) Option {
	return func(c *config) error {
		var missing []string
		for name, v := range map[string]string{"ClientID": creds.ClientID, "ClientSecret": creds.ClientSecret, "AccountID": creds.AccountID} {
			if strings.TrimSpace(v) == "" {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("saferetry: WithChiftAuth: %s must not be empty", strings.Join(missing, ", "))
		}
		if _, err := uuid.Parse(creds.AccountID); err != nil {
			return fmt.Errorf("saferetry: WithChiftAuth: AccountID %q is not a UUID", creds.AccountID)
		}
		if err := WithChift()(c); err != nil {
			return err
		}
		c.protocols[len(c.protocols)-1].option = "WithChiftAuth"
		if c.chiftCreds != nil {
			return errors.New("saferetry: WithChiftAuth given twice: keep one set of credentials")
		}
		c.chiftCreds = &creds
		return nil
	}
}

// chiftAuth hands out Chift tokens. A valid cached token is read without
// a lock. Otherwise every caller waits for the one fetch in flight, each
// only as long as its own context lasts: the fetch goes on for the others.
// A 401 drops the cached token, once however many requests saw it.
type chiftAuth struct {
	creds    ChiftCredentials
	tokenURL string
	origin   *url.URL
	client   *http.Client                 // the base transport, no retries, no redirects
	cached   atomic.Pointer[oauth2.Token] // nil: none yet, or a 401 dropped it

	mu     sync.Mutex  // guards flight
	flight *tokenFetch // the fetch in progress, nil when none
}

// tokenFetch is one POST /token, shared by every caller that needs a
// token meanwhile. token and err are set before done is closed.
type tokenFetch struct {
	done  chan struct{}
	token *oauth2.Token
	err   error
}

func newChiftAuth(creds ChiftCredentials, origin *url.URL, base http.RoundTripper) *chiftAuth {
	return &chiftAuth{
		creds:    creds,
		tokenURL: origin.JoinPath("token").String(),
		origin:   origin,
		client:   &http.Client{Transport: base, CheckRedirect: useLastResponse, Timeout: chiftTokenTimeout},
	}
}

func (a *chiftAuth) applies(u *url.URL) bool {
	return sameOrigin(u, a.origin)
}

// token returns a valid access token, fetching one if needed. A caller
// whose ctx ends during the fetch gets ctx's error at once.
func (a *chiftAuth) token(ctx context.Context) (string, error) {
	if t := a.cached.Load(); usable(t) {
		return t.AccessToken, nil
	}
	f := a.fetching()
	select {
	case <-f.done:
	case <-ctx.Done():
		return "", fmt.Errorf("saferetry: Chift token: %w", ctx.Err())
	}
	if f.err != nil {
		return "", f.err
	}
	return f.token.AccessToken, nil
}

// usable: t is not within chiftTokenMargin of its expiry. A token without
// an expiry never expires, as in x/oauth2.
func usable(t *oauth2.Token) bool {
	return t != nil && (t.Expiry.IsZero() || time.Now().Before(t.Expiry.Add(-chiftTokenMargin)))
}

// fetching returns the fetch in flight, starting one if there is none.
func (a *chiftAuth) fetching() *tokenFetch {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t := a.cached.Load(); usable(t) {
		// A fetch ended between the caller's look at the cache and the lock.
		f := &tokenFetch{done: make(chan struct{}), token: t}
		close(f.done)
		return f
	}
	if a.flight == nil {
		a.flight = &tokenFetch{done: make(chan struct{})}
		go a.runFetch(a.flight)
	}
	return a.flight
}

// runFetch does fetch f for all who wait on it, under its own timeout:
// no one caller's context may cut it short for the others.
func (a *chiftAuth) runFetch(f *tokenFetch) {
	ctx, cancel := context.WithTimeout(context.Background(), chiftTokenTimeout)
	defer cancel()
	t, err := a.fetch(ctx)
	if err != nil {
		err = fmt.Errorf("saferetry: Chift token: %w", err)
	}
	f.token, f.err = t, err
	a.mu.Lock()
	if err == nil {
		a.cached.Store(t)
	}
	a.flight = nil
	a.mu.Unlock()
	close(f.done)
}

// invalidate drops the cached token if it is still the stale one a 401
// answered; a newer token stays.
func (a *chiftAuth) invalidate(stale string) {
	if t := a.cached.Load(); t != nil && t.AccessToken == stale {
		a.cached.CompareAndSwap(t, nil)
	}
}

func (a *chiftAuth) fetch(ctx context.Context) (*oauth2.Token, error) {
	body, _ := json.Marshal(struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
		AccountID    string `json:"accountId"`
		EnvID        string `json:"envId,omitempty"`
	}{a.creds.ClientID, a.creds.ClientSecret, a.creds.AccountID, a.creds.EnvID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.tokenURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	resp, err := a.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // its message would repeat the URL only
		}
		return nil, err
	}
	defer drainAndClose(resp.Body)
	if err := CheckResponse(resp); err != nil {
		return nil, err
	}
	return decodeChiftToken(resp.Body, sent)
}

// decodeChiftToken reads Chift's Token. The expiry comes from expires_in
// counted from when the request was sent, which is immune to a skewed
// local clock; expires_on is the fallback.
func decodeChiftToken(body io.Reader, sent time.Time) (*oauth2.Token, error) {
	var out struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
		ExpiresOn   int64  `json:"expires_on"`
	}
	if err := json.NewDecoder(io.LimitReader(body, maxErrorBody)).Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding the token answer: %w", err)
	}
	if out.AccessToken == "" {
		return nil, errors.New("the token answer holds no access_token")
	}
	t := &oauth2.Token{AccessToken: out.AccessToken, TokenType: "Bearer"}
	const maxLifetime = int64(365 * 24 * time.Hour / time.Second) // keeps the product from overflowing
	switch {
	case out.ExpiresIn > 0:
		t.Expiry = sent.Add(time.Duration(min(out.ExpiresIn, maxLifetime)) * time.Second)
	case out.ExpiresOn > 0:
		t.Expiry = time.Unix(out.ExpiresOn, 0)
	}
	return t, nil
}

// sameOrigin: same scheme and host (with port), the only requests that
// may carry the API's credentials.
func sameOrigin(u, origin *url.URL) bool {
	return u.Scheme == origin.Scheme && strings.EqualFold(u.Host, origin.Host)
}
