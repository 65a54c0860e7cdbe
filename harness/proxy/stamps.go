package proxy

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/hopscope/hopscope/reqid"
)

// StampHeader is the first line of a stamps file.
const StampHeader = "id,req_read_ns,req_write_ns,resp_read_ns,resp_write_ns"

// Stamp is one request through the proxy, CLOCK_MONOTONIC nanoseconds:
// ReqRead when the read that completed the request returned, ReqWrite right
// before the upstream write call, RespRead when the read that completed the
// response returned, RespWrite right before the downstream write call.
type Stamp struct {
	ID        uint64
	ReqRead   int64
	ReqWrite  int64
	RespRead  int64
	RespWrite int64
}

// stampWriter appends stamps as CSV lines; safe for concurrent use.
type stampWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
	b  []byte
}

func newStampWriter(w io.Writer) *stampWriter {
	sw := &stampWriter{w: bufio.NewWriterSize(w, 64<<10)}
	sw.w.WriteString(StampHeader + "\n")
	return sw
}

func (sw *stampWriter) write(s Stamp) {
	if sw == nil {
		return
	}
	sw.mu.Lock()
	b := append(reqid.AppendFields(sw.b[:0], s.ID, s.ReqRead, s.ReqWrite, s.RespRead, s.RespWrite), '\n')
	sw.w.Write(b)
	sw.b = b
	sw.mu.Unlock()
}

func (sw *stampWriter) flush() error {
	if sw == nil {
		return nil
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.w.Flush()
}

// ReadStamps reads a stamps file.
func ReadStamps(r io.Reader) ([]Stamp, error) {
	var out []Stamp
	lines, err := reqid.ScanFields(r, "stamps file", StampHeader, 5, func(id uint64, f []string) error {
		s := Stamp{ID: id}
		if err := reqid.ParseInts(f, &s.ReqRead, &s.ReqWrite, &s.RespRead, &s.RespWrite); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	if err == nil && lines == 0 {
		return nil, fmt.Errorf("stamps file: empty, want the header %q", StampHeader)
	}
	return out, err
}
