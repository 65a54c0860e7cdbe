// Package app is the test application the load generator drives: an
// HTTP/1.1 server and a gRPC (h2c) echo service with a configurable service
// time (fixed or drawn from a distribution) and response size. It echoes the
// request ID (package reqid) in the X-Hopscope-Id header and at the start of
// the body (gRPC: in the response message's id field) and can write its own
// receive and send instants per request (CLOCK_MONOTONIC): the ground truth
// the probe's app hop is checked against. It must stay plain enough that any
// ordinary proxy (haproxy, nginx, caddy) forwards it unchanged.
package app
