package saferetrytest_test

import (
	"net/http"
	"testing"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The servers a test starts answer during the test and are closed when
// it ends.
func TestStartServersCloseWithTheTest(t *testing.T) {
	var urls []string
	t.Run("inner", func(t *testing.T) {
		chift, zerohash := saferetrytest.StartChiftServer(t), saferetrytest.StartZeroHashServer(t)
		for _, u := range []string{chift.URL + "/consumers/c/invoicing/invoices", zerohash.URL + "/time"} {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatalf("%s during the test: %v", u, err)
			}
			resp.Body.Close()
			urls = append(urls, u)
		}
	})
	for _, u := range urls {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			t.Errorf("%s still answers after its test ended", u)
		}
	}
}
