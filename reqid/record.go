package reqid

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Record is what the load generator knows of one request. All times are
// CLOCK_MONOTONIC nanoseconds (package clock); zero means "did not happen"
// (no first byte after a connect error, say).
type Record struct {
	ID        uint64
	Due       int64 // when the open-loop schedule wanted it sent
	Sent      int64 // when the write of the request was issued
	FirstByte int64 // when the first byte of the response was read
	Done      int64 // when the whole response was read
	Status    int   // HTTP status, or gRPC code + 1000; 0 on a transport error
	Err       string
}

// RecordHeader is the first line of a record file.
const RecordHeader = "id,due_ns,sent_ns,first_byte_ns,done_ns,status,error"

// RecordWriter streams records as CSV lines. It is not safe for concurrent
// use; the caller serialises.
type RecordWriter struct{ w *bufio.Writer }

// NewRecordWriter writes the header line and returns the writer.
func NewRecordWriter(w io.Writer) (*RecordWriter, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(RecordHeader + "\n"); err != nil {
		return nil, err
	}
	return &RecordWriter{w: bw}, nil
}

// Write appends one record.
func (rw *RecordWriter) Write(r Record) error {
	b := AppendFields(make([]byte, 0, 128), r.ID, r.Due, r.Sent, r.FirstByte, r.Done, int64(r.Status))
	b = append(b, ',')
	b = append(b, strings.NewReplacer(",", ";", "\n", " ").Replace(r.Err)...)
	b = append(b, '\n')
	_, err := rw.w.Write(b)
	return err
}

// Flush writes buffered records out.
func (rw *RecordWriter) Flush() error { return rw.w.Flush() }

// AppendFields appends one CSV line's fields: id as 16 hex digits (no
// marker), then each value in decimal, comma-separated, no newline. The
// record file, the app's and the reference proxy's stamp files share it.
func AppendFields(b []byte, id uint64, vals ...int64) []byte {
	b = appendHex(b, id)
	for _, v := range vals {
		b = append(b, ',')
		b = strconv.AppendInt(b, v, 10)
	}
	return b
}

// ReadRecords reads a record file written by RecordWriter.
func ReadRecords(r io.Reader) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Record
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			if text != RecordHeader {
				return nil, fmt.Errorf("record file: header %q, want %q", text, RecordHeader)
			}
			continue
		}
		f := strings.SplitN(text, ",", 7)
		if len(f) != 7 {
			return out, fmt.Errorf("record file line %d: %d fields, want 7", line, len(f))
		}
		var rec Record
		var err error
		if rec.ID, err = strconv.ParseUint(f[0], 16, 64); err != nil {
			return out, fmt.Errorf("record file line %d: id: %w", line, err)
		}
		ints := []*int64{&rec.Due, &rec.Sent, &rec.FirstByte, &rec.Done}
		for i, p := range ints {
			if *p, err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return out, fmt.Errorf("record file line %d: field %d: %w", line, i+2, err)
			}
		}
		if rec.Status, err = strconv.Atoi(f[5]); err != nil {
			return out, fmt.Errorf("record file line %d: status: %w", line, err)
		}
		rec.Err = f[6]
		out = append(out, rec)
	}
	return out, sc.Err()
}
