package saferetry

import (
	"net/http"
	"net/url"
	"strings"
)

// redacted stands in for every query value the SDK shows.
const redacted = "REDACTED"

// redactURL is the URL of req as errors, logs and observers show it. APIs
// put credentials in the query (?api_key=, signed-URL signatures), so
// every query value is replaced; the parameter names stay, in their order,
// which is what debugging needs. User info and the fragment are dropped.
func redactURL(req *http.Request) string {
	if req.URL == nil {
		return ""
	}
	return redactedURL(req.URL)
}

func redactedURL(u *url.URL) string {
	shown := *u
	shown.User = nil
	shown.Fragment, shown.RawFragment = "", ""
	shown.RawQuery = redactQuery(u.RawQuery)
	return shown.String()
}

// redactQuery replaces the value of each name=value pair. A bare item
// (no "=") is replaced whole: it has no name apart from its content, and
// that content may be the token itself. An empty value stays empty: there
// is nothing to hide, and "api_key=" says why a request was refused.
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	items := strings.Split(raw, "&")
	for i, item := range items {
		name, value, ok := strings.Cut(item, "=")
		switch {
		case !ok && item != "":
			items[i] = redacted
		case ok && value != "":
			items[i] = name + "=" + redacted
		}
	}
	return strings.Join(items, "&")
}

// redactRawURL is redactedURL for a URL held as a string, as in a
// *url.Error. One that does not parse is cut at its query and fragment;
// if it then still holds an "@", user info cannot be told from the path
// and nothing of it is shown.
func redactRawURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return redactedURL(u)
	}
	rest, _, _ := strings.Cut(raw, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	if strings.Contains(rest, "@") {
		return redacted
	}
	if hasQuery {
		rest += "?" + redactQuery(query)
	}
	return rest
}

// redactError hides the query values in the *url.Error that net/http's
// http.Client puts at the top of every error it returns: it copies the
// request's URL into it verbatim. Only the URL changes; the chain below
// is kept, so errors.Is, errors.As and KeyFromError see what they saw.
func redactError(err error) error {
	urlErr, ok := err.(*url.Error)
	if !ok {
		return err
	}
	shown := *urlErr
	shown.URL = redactRawURL(urlErr.URL)
	return &shown
}
