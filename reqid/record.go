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
	var out []Record
	_, err := ScanFields(r, "record file", RecordHeader, 7, func(id uint64, f []string) error {
		rec := Record{ID: id}
		var status int64
		if err := ParseInts(f[:5], &rec.Due, &rec.Sent, &rec.FirstByte, &rec.Done, &status); err != nil {
			return err
		}
		rec.Status, rec.Err = int(status), f[5]
		out = append(out, rec)
		return nil
	})
	return out, err
}

// ScanFields reads a file of AppendFields lines under header: it checks the
// header line, splits each later line into n fields (the last keeps any
// further commas), parses the hex ID and calls fn with the n-1 fields after
// it. Errors name what (a "stamps file") and the line. It returns how many
// lines it read, the header included.
func ScanFields(r io.Reader, what, header string, n int, fn func(id uint64, fields []string) error) (lines int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines++
		text := sc.Text()
		if lines == 1 {
			if text != header {
				return lines, fmt.Errorf("%s: header %q, want %q", what, text, header)
			}
			continue
		}
		f := strings.SplitN(text, ",", n)
		if len(f) != n {
			return lines, fmt.Errorf("%s line %d: %d fields, want %d", what, lines, len(f), n)
		}
		id, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return lines, fmt.Errorf("%s line %d: id: %w", what, lines, err)
		}
		if err := fn(id, f[1:]); err != nil {
			return lines, fmt.Errorf("%s line %d: %w", what, lines, err)
		}
	}
	return lines, sc.Err()
}

// ParseInts parses fields[i] as a decimal integer into dst[i].
func ParseInts(fields []string, dst ...*int64) error {
	for i, p := range dst {
		v, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return fmt.Errorf("field %d: %w", i+2, err)
		}
		*p = v
	}
	return nil
}
