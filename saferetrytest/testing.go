package saferetrytest

import "testing"

// StartChiftServer starts a ChiftServer for the test or benchmark tb and
// closes it when tb ends (tb.Cleanup), so a test needs no defer.
func StartChiftServer(tb testing.TB) *ChiftServer {
	tb.Helper()
	s := NewChiftServer()
	tb.Cleanup(s.Close)
	return s
}

// StartZeroHashServer starts a ZeroHashServer for the test or benchmark tb
// and closes it when tb ends (tb.Cleanup).
func StartZeroHashServer(tb testing.TB) *ZeroHashServer {
	tb.Helper()
	s := NewZeroHashServer()
	tb.Cleanup(s.Close)
	return s
}
