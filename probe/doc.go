// Package probe attributes a request's latency to the hops of its path. It
// loads hopscope's TC classifier (package bpf), attaches it to every watched
// pod's interfaces (TCX where the kernel has it, clsact + cls_bpf before
// that, inside the pod's network namespace), drains the ring buffer on a
// timer, parses the captured payload prefixes (HTTP/1.1 and HTTP/2 h2c),
// follows each request ID across the observation points and records one
// HdrHistogram per hop (client-proxy/out ... client-proxy/in, DESIGN.md).
//
// It must not change a packet's fate, must not leave programs, filters or
// qdiscs behind (Close, and Cleanup for what a killed process left), and must
// never drop an event silently: every loss is counted in Health. It measures;
// it does not drive load or decide what a run is worth.
package probe
