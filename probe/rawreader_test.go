package probe

import "github.com/cilium/ebpf/ringbuf"

func newRawReader(p *Probe) (*ringbuf.Reader, error) { return ringbuf.NewReader(p.events) }
