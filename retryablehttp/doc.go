// Package saferetryablehttp puts saferetry under a
// github.com/hashicorp/go-retryablehttp client, for services that already
// send through a *retryablehttp.Client and keep calling its Do, Post, Get
// and the rest.
//
// Stacking the two naively, a saferetry-wrapped http.Client as
// rc.HTTPClient under retryablehttp's DefaultRetryPolicy, is wrong: every
// retry of retryablehttp calls HTTPClient.Do again, which the Transport
// sees as a new logical request with a new idempotency key. A create whose
// answer was lost is then created a second time, a keyless POST that met a
// 500 or a dropped connection is sent again, the attempts multiply
// (retryablehttp's tries times saferetry's), and a cancelled context
// replaces the Transport's typed error with a bare context error.
//
// Configure fixes the stack: the saferetry Transport makes every retry,
// with one key per logical request, and retryablehttp makes one try per
// call and hands back the Transport's answer as it is.
//
// The package is named saferetryablehttp, not retryablehttp like its
// directory, so that a file can import it beside
// github.com/hashicorp/go-retryablehttp (package retryablehttp) without
// renaming either.
package saferetryablehttp
