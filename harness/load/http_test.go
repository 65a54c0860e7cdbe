package load

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name, in  string
		status    int
		closeConn bool
		err       error
		rest      string // what must be left unread (the next response)
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", 200, false, nil, "NEXT"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\nNEXT", 200, false, nil, "NEXT"},
		{"close", "HTTP/1.1 503 Busy\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n", 503, true, nil, ""},
		{"http10", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, true, nil, ""},
		{"http10 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nxNEXT", 200, false, nil, "NEXT"},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\nNEXT", 204, false, nil, "NEXT"},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nNEXT", 200, false, nil, "NEXT"},
		{"to eof", "HTTP/1.1 200 OK\r\n\r\nall of it", 200, true, nil, ""},
		{"garbage", "HELLO\r\n\r\n", 0, false, errProtocol, ""},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 200, false, errProtocol, ""},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200, false, errProtocol, ""},
	}
	for _, tc := range tests {
		br := bufio.NewReader(strings.NewReader(tc.in))
		status, closeConn, err := readResponse(br)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || status != tc.status || closeConn != tc.closeConn {
			t.Errorf("%s: status %d close %v err %v; want %d %v", tc.name, status, closeConn, err, tc.status, tc.closeConn)
		}
		rest := make([]byte, 64)
		n, _ := br.Read(rest)
		if string(rest[:n]) != tc.rest {
			t.Errorf("%s: left %q unread, want %q", tc.name, rest[:n], tc.rest)
		}
	}
}

func BenchmarkReadResponse(b *testing.B) {
	resp := "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 25 Nov 2026 23:56:51 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
	r := strings.NewReader("")
	br := bufio.NewReader(r)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Reset(resp)
		br.Reset(r)
		if _, _, err := readResponse(br); err != nil {
			b.Fatal(err)
		}
	}
}
