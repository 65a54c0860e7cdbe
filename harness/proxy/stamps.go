package proxy

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
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
	sc := bufio.NewScanner(r)
	var out []Stamp
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			if sc.Text() != StampHeader {
				return nil, fmt.Errorf("stamps file: header %q, want %q", sc.Text(), StampHeader)
			}
			continue
		}
		f := strings.Split(sc.Text(), ",")
		if len(f) != 5 {
			return out, fmt.Errorf("stamps file line %d: %d fields, want 5", line, len(f))
		}
		var s Stamp
		var err error
		if s.ID, err = strconv.ParseUint(f[0], 16, 64); err != nil {
			return out, fmt.Errorf("stamps file line %d: id: %w", line, err)
		}
		for i, p := range []*int64{&s.ReqRead, &s.ReqWrite, &s.RespRead, &s.RespWrite} {
			if *p, err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return out, fmt.Errorf("stamps file line %d: field %d: %w", line, i+2, err)
			}
		}
		out = append(out, s)
	}
	if line == 0 {
		return nil, fmt.Errorf("stamps file: empty, want the header %q", StampHeader)
	}
	return out, sc.Err()
}
