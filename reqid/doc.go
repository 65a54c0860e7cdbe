// Package reqid is the request identity that joins every view of one request:
// the ID the load generator puts where every proxy forwards it unchanged (the
// HTTP/1.1 request line, the gRPC request message), the parser the probe runs
// over captured payload bytes to find it again, and the per-request record
// the load generator streams (due, sent, first byte, done; CLOCK_MONOTONIC).
// It must stay free of I/O beyond the record stream and of any dependency on
// the harness or the probe, which both import it.
package reqid
