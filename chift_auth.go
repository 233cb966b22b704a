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
// a 401 fetches a new one and retries that request once. The token goes
// only to the API's own scheme and host (NewClient's base URL, or
// WithAPIBaseURL). It implies WithChift.
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
		c.chiftCreds = &creds
		return nil
	}
}

// chiftAuth hands out Chift tokens. The cache is x/oauth2's
// ReuseTokenSource (one fetch at a time, early expiry); a 401 swaps in a
// fresh source, once per stale token however many requests saw it.
type chiftAuth struct {
	creds    ChiftCredentials
	tokenURL string
	origin   *url.URL
	client   *http.Client // the base transport, no retries, no redirects
	current  atomic.Pointer[tokenSource]
}

type tokenSource struct{ oauth2.TokenSource }

func newChiftAuth(creds ChiftCredentials, origin *url.URL, base http.RoundTripper) *chiftAuth {
	a := &chiftAuth{
		creds:    creds,
		tokenURL: origin.JoinPath("token").String(),
		origin:   origin,
		client:   &http.Client{Transport: base, CheckRedirect: useLastResponse, Timeout: chiftTokenTimeout},
	}
	a.current.Store(a.newSource())
	return a
}

func (a *chiftAuth) newSource() *tokenSource {
	return &tokenSource{oauth2.ReuseTokenSourceWithExpiry(nil, chiftFetcher{a}, chiftTokenMargin)}
}

func (a *chiftAuth) applies(u *url.URL) bool {
	return sameOrigin(u, a.origin)
}

// token returns a valid access token, fetching one if needed.
func (a *chiftAuth) token() (string, error) {
	t, err := a.current.Load().Token()
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// invalidate drops the cached token if it is still stale, the one a 401
// answered.
func (a *chiftAuth) invalidate(stale string) {
	src := a.current.Load()
	if t, err := src.Token(); err == nil && t.AccessToken == stale {
		a.current.CompareAndSwap(src, a.newSource())
	}
}

// chiftFetcher is the oauth2.TokenSource that calls POST /token. It runs
// under ReuseTokenSource's lock on behalf of every waiting request, so it
// uses its own timeout rather than one caller's context.
type chiftFetcher struct{ a *chiftAuth }

func (f chiftFetcher) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chiftTokenTimeout)
	defer cancel()
	t, err := f.a.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("saferetry: Chift token: %w", err)
	}
	return t, nil
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
