package reqid

import (
	"bytes"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	cases := []struct {
		name string
		in   string
		id   uint64
		ok   bool
	}{
		{"request line", "GET /?hsid=00000000000000a1 HTTP/1.1\r\nHost: x\r\n", 0xa1, true},
		{"with other params", "GET /api?x=1&hsid=ffffffffffffffff&y=2 HTTP/1.1", ^uint64(0), true},
		{"truncated", "GET /?hsid=00000000000", 0, false},
		{"upper hex rejected", "GET /?hsid=00000000000000AA HTTP/1.1", 0, false},
		{"bad then good", "hsid=zz hsid=0000000000000001", 1, true},
		{"none", "GET / HTTP/1.1", 0, false},
		{"empty", "", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, ok := Find([]byte(c.in))
			if id != c.id || ok != c.ok {
				t.Fatalf("Find(%q) = %x, %v; want %x, %v", c.in, id, ok, c.id, c.ok)
			}
		})
	}
}

func TestAppendRoundTrip(t *testing.T) {
	for _, id := range []uint64{0, 1, 0xdeadbeef, ^uint64(0)} {
		s := String(id)
		if len(s) != Len {
			t.Fatalf("len %d", len(s))
		}
		got, ok := Find([]byte(s))
		if !ok || got != id {
			t.Fatalf("%s -> %x %v", s, got, ok)
		}
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewRecordWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	in := []Record{
		{ID: 1, Due: 10, Sent: 11, FirstByte: 20, Done: 21, Status: 200},
		{ID: 2, Due: 30, Sent: 31, Err: "connect: refused, again"},
	}
	for _, r := range in {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	out, err := ReadRecords(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0] != in[0] || out[1].Err != "connect: refused; again" {
		t.Fatalf("got %+v", out)
	}
}

func FuzzFind(f *testing.F) {
	f.Add([]byte("GET /?hsid=00000000000000a1 HTTP/1.1"))
	f.Add([]byte("hsid=hsid=hsid="))
	f.Fuzz(func(t *testing.T, p []byte) {
		id, ok := Find(p)
		if ok && !bytes.Contains(p, []byte(String(id))) {
			t.Fatalf("found %x not present in input", id)
		}
	})
}

func TestScanFieldsErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"header", "x,y\n", `stamps file: header "x,y"`},
		{"fields", "id,a,b\n0000000000000001,2\n", "stamps file line 2: 2 fields, want 3"},
		{"id", "id,a,b\nzz,1,2\n", "stamps file line 2: id:"},
		{"int", "id,a,b\n0000000000000001,1,x\n", "stamps file line 2: field 3:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ScanFields(strings.NewReader(c.in), "stamps file", "id,a,b", 3, func(_ uint64, f []string) error {
				var a, b int64
				return ParseInts(f, &a, &b)
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}
