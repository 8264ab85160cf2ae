package public

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzRequestedBytes: what a download reserves before it starts is never
// less than the bytes of the file net/http's ServeContent then sends for
// the same Range header (so a link's byte budget holds), and never more
// than the file (or 1 for an empty one).
func FuzzRequestedBytes(f *testing.F) {
	modtime := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	for _, r := range []string{"", "bytes=0-", "bytes=0-0", "bytes=-10", "bytes=5-3", "bytes=0-9,10-", "bytes=0-,0-",
		"bytes= 1 - 2", "bytes=100-", "bytes=-0", "items=0-1", "bytes=0-99999999999999999999"} {
		f.Add(r, uint16(100), "")
		f.Add(r, uint16(0), "")
		f.Add(r, uint16(100), modtime.Format(http.TimeFormat))
		f.Add(r, uint16(100), modtime.Add(time.Second).Format(http.TimeFormat))
	}
	f.Add("bytes=10-", uint16(100), `"etag"`)
	f.Fuzz(func(t *testing.T, rng string, n uint16, ifRange string) {
		file := bytes.Repeat([]byte{'x'}, int(n))
		req := httptest.NewRequest(http.MethodGet, "/dl/x", nil)
		req.Header.Set("Range", rng)
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
		want := requestedBytes(req, int64(n), modtime)
		if want < 1 || (n > 0 && want > int64(n)) {
			t.Fatalf("Range %q of %d bytes reserves %d", rng, n, want)
		}
		rec := httptest.NewRecorder()
		cw := &countingWriter{ResponseWriter: rec}
		http.ServeContent(cw, req, "x.bin", modtime, bytes.NewReader(file))
		if cw.status != http.StatusOK && cw.status != http.StatusPartialContent {
			return
		}
		sent := cw.written
		if cw.status == http.StatusPartialContent && rec.Header().Get("Content-Range") == "" {
			sent = min(sent, int64(n)) // multipart: boundaries are not the file's
		}
		if sent > want {
			t.Fatalf("Range %q of %d bytes reserves %d, ServeContent sent %d", rng, n, want, sent)
		}
	})
}
