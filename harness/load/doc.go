// Package load is hopscope's open-loop load generator. Request i is due at
// t0 + i/R; latency is measured from the due time (corrected for coordinated
// omission), service time from the actual send, and the send lag (actual send
// minus due) is a histogram of its own. A slow server never slows the
// schedule: when every connection is busy the pool grows up to a limit, and
// beyond it the request waits for a connection and is counted as delayed.
// It speaks plain HTTP/1.1 keep-alive (a lean client on net.Conn) and gRPC
// over h2c (the echo service of package app). Every request carries a unique
// request ID (package reqid). It must not apply RecordCorrectedValue on top of
// the due-time correction, and must not print: the caller reports.
package load
