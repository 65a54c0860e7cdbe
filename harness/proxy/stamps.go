package proxy

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/hopscope/hopscope/reqid"
)

// StampHeader is the first line of a stamps file.
const StampHeader = "id,req_read_ns,req_write_ns,resp_read_ns,resp_write_ns,k_req_rx_ns,k_req_tx_ns,k_resp_rx_ns,k_resp_tx_ns"

// Stamp is one request through the proxy, CLOCK_MONOTONIC nanoseconds:
// ReqRead when the read that completed the request returned, ReqWrite right
// before the upstream write call, RespRead when the read that completed the
// response returned, RespWrite right before the downstream write call.
//
// The K fields are the kernel's socket stamps of the same four events
// (SO_TIMESTAMPING, see kstamp.go), 0 where the kernel gave none: KReqRx
// and KRespRx when the segment that completed the message was received,
// KReqTx and KRespTx when the write's last segment was queued to the
// device, right before its TC egress hook.
type Stamp struct {
	ID        uint64
	ReqRead   int64
	ReqWrite  int64
	RespRead  int64
	RespWrite int64
	KReqRx    int64
	KReqTx    int64
	KRespRx   int64
	KRespTx   int64
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
	b := append(reqid.AppendFields(sw.b[:0], s.ID, s.ReqRead, s.ReqWrite, s.RespRead, s.RespWrite, s.KReqRx, s.KReqTx, s.KRespRx, s.KRespTx), '\n')
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
	lines, err := reqid.ScanFields(r, "stamps file", StampHeader, 9, func(id uint64, f []string) error {
		s := Stamp{ID: id}
		if err := reqid.ParseInts(f, &s.ReqRead, &s.ReqWrite, &s.RespRead, &s.RespWrite, &s.KReqRx, &s.KReqTx, &s.KRespRx, &s.KRespTx); err != nil {
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
