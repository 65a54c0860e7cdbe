// Package proxy is hopscope's reference sidecar proxy: a lean HTTP/1.1
// keep-alive forwarder (one upstream connection per downstream connection,
// messages forwarded byte for byte) and an h2c (gRPC) mode, that can add a
// precise fixed delay and record, per request, CLOCK_MONOTONIC stamps taken
// next to its read and write system calls, and (HTTP/1.1) the kernel's
// socket stamps of the same four events (SO_TIMESTAMPING: receive, and send
// before TC egress), which leave out the proxy's own wake-up. Those stamps
// are the ground truth the probe's proxy hops are checked against.
//
// It must stay small and predictable: no header rewriting, no pooling across
// downstream connections, no retries beyond one redial of a stale upstream
// connection. It is a measuring instrument, not a production proxy.
package proxy
