package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/hopscope/hopscope/bpf"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/target"
)

// Mode is how programs are attached.
type Mode string

const (
	// Auto uses TCX when a test attach succeeds, clsact otherwise.
	Auto Mode = "auto"
	// TCX attaches through bpf links (Linux >= 6.6); links vanish with the process.
	TCX Mode = "tcx"
	// Clsact adds a direct-action cls_bpf filter under a clsact qdisc
	// through netlink; filters outlive a killed process (see Cleanup).
	Clsact Mode = "clsact"
)

// ParseMode parses "auto", "tcx" or "clsact" ("" is auto).
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", Auto:
		return Auto, nil
	case TCX, Clsact:
		return Mode(s), nil
	}
	return "", fmt.Errorf("attach mode %q: want auto, tcx or clsact", s)
}

// MaxCapture is the largest payload prefix the program can capture.
const MaxCapture = 256

// Config says how to load and run the probe. The zero value is usable.
type Config struct {
	Mode Mode // auto (default), tcx or clsact
	// CaptureBytes is how many payload bytes of each segment are captured,
	// 1..256; default 128 (enough for a request line with its ID).
	CaptureBytes int
	// RingBytes is the ring buffer's size, a power of two; default 8 MiB.
	RingBytes int
	// Drain is the reader's timer; default 50 ms. Draining in fewer, larger
	// batches is cheaper: at 2000 req/s through a mesh lab the reader used
	// 6.3% of a core draining every 5 ms and 2.6% every 50 ms, and the
	// client's p50 moved by +8.7/+18.4 µs against +4.6/-0.5 µs (medians of
	// 8 attached/detached pairs; BenchmarkOverhead). The ring must hold a
	// drain's worth of events; WakeupBytes wakes the reader early in a flood.
	Drain time.Duration
	// WakeupBytes wakes the reader early when this much is waiting in the
	// ring; default RingBytes/4.
	WakeupBytes int
	// Timeout closes a request that still lacks observation points as
	// partial; default 5 s.
	Timeout time.Duration
	// Ports are watched in addition to the targets' ports, as server ports
	// (a segment toward one of them is a request).
	Ports []uint16
	// KeepTimelines keeps every finished request's timeline in the Result
	// (for joining with load records); off by default to bound memory.
	KeepTimelines bool
	// Logf, if set, receives one line per notable event (mode chosen,
	// leftovers removed). nil is quiet.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() error {
	if c.Mode == "" {
		c.Mode = Auto
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if c.CaptureBytes == 0 {
		c.CaptureBytes = 128
	}
	if c.CaptureBytes < 1 || c.CaptureBytes > MaxCapture {
		return fmt.Errorf("capture bytes %d: want 1 to %d", c.CaptureBytes, MaxCapture)
	}
	if c.RingBytes == 0 {
		c.RingBytes = 8 << 20
	}
	if c.RingBytes < os.Getpagesize() || c.RingBytes&(c.RingBytes-1) != 0 {
		return fmt.Errorf("ring bytes %d: want a power of two of at least %d", c.RingBytes, os.Getpagesize())
	}
	if c.Drain <= 0 {
		c.Drain = 50 * time.Millisecond
	}
	if c.WakeupBytes <= 0 {
		c.WakeupBytes = c.RingBytes / 4
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return nil
}

// Probe is a loaded probe: shared maps, a reader, and the attachments made
// for the targets. Its methods are safe for concurrent use.
type Probe struct {
	cfg  Config
	mode Mode

	spec    *ebpf.CollectionSpec
	events  *ebpf.Map
	ports   *ebpf.Map
	stats   *ebpf.Map
	reader  *ringbuf.Reader
	drained chan chan struct{}
	done    chan struct{}
	readErr error

	mu        sync.Mutex // guards everything below and the correlator
	att       *attacher
	targets   map[string]*watched
	portRefs  map[uint16]int
	corr      *correlator
	base      Counters // kernel counters at the last Reset
	received  uint64   // events read since Start
	recvBase  uint64
	closed    bool
	closeOnce sync.Once
}

// watched is one attached target.
type watched struct {
	t      target.Target
	points []*attachment
	ports  []uint16
}

// Start checks the kernel and privileges, removes leftovers of killed
// hopscope processes, loads the shared maps and starts the reader. Attach
// targets next. Cancelling ctx closes the probe (detaches everything).
func Start(ctx context.Context, cfg Config) (*Probe, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		cfg.Logf("probe: kernel BTF missing (%v): not needed, the classifier reads only its __sk_buff context", err)
	}
	spec, err := bpf.LoadProbe()
	if err != nil {
		return nil, fmt.Errorf("load probe spec: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(cfg.RingBytes)
	for name, v := range map[string]any{
		"capture_len":  uint32(cfg.CaptureBytes),
		"wakeup_bytes": uint64(cfg.WakeupBytes),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	p := &Probe{
		cfg:      cfg,
		spec:     spec,
		drained:  make(chan chan struct{}),
		done:     make(chan struct{}),
		targets:  map[string]*watched{},
		portRefs: map[uint16]int{},
	}
	if p.events, err = ebpf.NewMap(spec.Maps["events"]); err != nil {
		return nil, fmt.Errorf("create ring buffer: %w", mapErr(err))
	}
	if p.ports, err = ebpf.NewMap(spec.Maps["ports"]); err != nil {
		p.closeMaps()
		return nil, fmt.Errorf("create ports map: %w", mapErr(err))
	}
	if p.stats, err = ebpf.NewMap(spec.Maps["stats"]); err != nil {
		p.closeMaps()
		return nil, fmt.Errorf("create counters map: %w", mapErr(err))
	}
	if p.reader, err = ringbuf.NewReader(p.events); err != nil {
		p.closeMaps()
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	p.att = newAttacher(p, cfg.Logf)
	removed, err := Cleanup(CleanupOptions{Stale: true})
	if err != nil {
		cfg.Logf("probe: cleanup of leftovers: %v", err)
	} else if removed > 0 {
		cfg.Logf("probe: removed %d filter(s) left by killed hopscope processes", removed)
	}
	if p.mode, err = p.att.chooseMode(cfg.Mode); err != nil {
		p.reader.Close()
		p.closeMaps()
		return nil, err
	}
	cfg.Logf("probe: attach mode %s", p.mode)
	p.corr = newCorrelator(cfg.Timeout, cfg.KeepTimelines)
	for _, port := range cfg.Ports {
		if err := p.addPortLocked(port); err != nil {
			p.Close()
			return nil, err
		}
	}
	go p.read()
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-p.done:
		}
	}()
	return p, nil
}

// Mode is the attach mode in use (tcx or clsact), never auto.
func (p *Probe) Mode() Mode { return p.mode }

func (p *Probe) closeMaps() {
	for _, m := range []*ebpf.Map{p.events, p.ports, p.stats} {
		if m != nil {
			m.Close()
		}
	}
}

// Attach starts watching t: its Device (ingress and egress) and, when set,
// its Loopback (egress: every packet on lo crosses egress once). An
// interface shared with an attached target is attached once and counted.
func (p *Probe) Attach(t target.Target) error {
	if t.Unattributable != "" {
		return fmt.Errorf("attach %s: %s", t, t.Unattributable)
	}
	if t.Device == "" && t.Loopback == "" {
		return fmt.Errorf("attach %s: no device and no loopback to watch", t)
	}
	if t.Role != target.Client && t.Role != target.Server {
		return fmt.Errorf("attach %s: role %q: want client or server", t, t.Role)
	}
	name := t.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("attach: probe is closed")
	}
	if _, ok := p.targets[name]; ok {
		return fmt.Errorf("attach %s: already attached", name)
	}
	w := &watched{t: t}
	for _, port := range []uint16{t.InboundPort, t.OutboundPort, t.AppPort} {
		if port != 0 {
			if err := p.addPortLocked(port); err != nil {
				p.dropLocked(w)
				return err
			}
			w.ports = append(w.ports, port)
		}
	}
	type want struct {
		dev  string
		kind PointKind
	}
	var wants []want
	if t.Device != "" {
		wants = append(wants, want{t.Device, DevIngress}, want{t.Device, DevEgress})
	}
	if t.Loopback != "" {
		wants = append(wants, want{t.Loopback, Loopback})
	}
	for _, wt := range wants {
		a, err := p.att.acquire(t.NetnsPath, wt.dev, wt.kind)
		if err != nil {
			p.dropLocked(w)
			return fmt.Errorf("attach %s: %w", name, err)
		}
		w.points = append(w.points, a)
		p.corr.addOwner(a.point, pointOwner{target: name, role: t.Role, kind: wt.kind,
			inbound: t.InboundPort, outbound: t.OutboundPort, app: t.AppPort, netns: a.nsID})
	}
	p.targets[name] = w
	p.corr.setExpected(p.expectedLocked())
	return nil
}

// Detach stops watching the target named name (Target.String()).
func (p *Probe) Detach(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.targets[name]
	if !ok {
		return fmt.Errorf("detach %s: not attached", name)
	}
	delete(p.targets, name)
	err := p.dropLocked(w)
	p.corr.setExpected(p.expectedLocked())
	return err
}

func (p *Probe) dropLocked(w *watched) error {
	var errs []error
	for _, a := range w.points {
		p.corr.removeOwner(a.point, w.t.String())
		if err := p.att.release(a); err != nil {
			errs = append(errs, err)
		}
	}
	for _, port := range w.ports {
		if err := p.delPortLocked(port); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Probe) addPortLocked(port uint16) error {
	p.portRefs[port]++
	if p.portRefs[port] > 1 {
		return nil
	}
	p.corr.serverPorts[port] = true
	if err := p.ports.Put(uint32(port), uint8(1)); err != nil {
		return fmt.Errorf("watch port %d: %w", port, err)
	}
	return nil
}

func (p *Probe) delPortLocked(port uint16) error {
	p.portRefs[port]--
	if p.portRefs[port] > 0 {
		return nil
	}
	delete(p.portRefs, port)
	delete(p.corr.serverPorts, port)
	if err := p.ports.Put(uint32(port), uint8(0)); err != nil {
		return fmt.Errorf("unwatch port %d: %w", port, err)
	}
	return nil
}

// expectedLocked is the ordered set of stages the attached targets can see.
func (p *Probe) expectedLocked() stageSet {
	var s stageSet
	for _, w := range p.targets {
		t := w.t
		switch t.Role {
		case target.Client:
			if t.Device != "" {
				s |= 1<<ClientDevReq | 1<<ClientDevResp
			}
			if t.Loopback != "" && t.OutboundPort != 0 {
				s |= 1<<ClientLoReq | 1<<ClientLoResp
			}
		case target.Server:
			if t.Device != "" {
				s |= 1<<ServerDevReq | 1<<ServerDevResp
			}
			if t.Loopback != "" && t.AppPort != 0 && t.InboundPort != 0 {
				s |= 1<<ServerLoReq | 1<<ServerLoResp
			}
		}
	}
	return s
}

// Counters are the kernel's counters summed over CPUs.
type Counters struct {
	Seen    uint64 // packets that ran the program
	Matched uint64 // segments of watched flows worth an event
	Emitted uint64 // events submitted
	Lost    uint64 // events lost: the ring buffer was full
}

// Counters reads the kernel counters since Start.
func (p *Probe) Counters() (Counters, error) {
	var per []bpf.ProbeCounters
	if err := p.stats.Lookup(uint32(0), &per); err != nil {
		return Counters{}, fmt.Errorf("read probe counters: %w", err)
	}
	var c Counters
	for _, v := range per {
		c.Seen += v.Seen
		c.Matched += v.Matched
		c.Emitted += v.Emitted
		c.Lost += v.Lost
	}
	return c, nil
}

// Result drains the ring buffer and returns what was measured since Start
// or the last Reset. Requests still in flight stay for the next call.
func (p *Probe) Result() Result {
	p.sync()
	c, cerr := p.Counters()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.corr.expire(nowNs())
	r := p.corr.result()
	r.Mode = string(p.mode)
	h := &r.Probe
	h.Mode = string(p.mode)
	h.Packets = c.Seen - p.base.Seen
	h.Matched = c.Matched - p.base.Matched
	h.Emitted = c.Emitted - p.base.Emitted
	h.Drops = c.Lost - p.base.Lost
	h.Events = p.received - p.recvBase
	h.Points = p.att.points()
	if cerr != nil {
		h.Error = cerr.Error()
	}
	if p.readErr != nil {
		h.Error = p.readErr.Error()
	}
	return r
}

// Reset starts a new measurement window: histograms and counts restart,
// requests in flight are kept.
func (p *Probe) Reset() {
	p.sync()
	c, _ := p.Counters()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.base = c
	p.recvBase = p.received
	p.corr.reset()
}

// sync waits until the reader has drained everything submitted before the
// call.
func (p *Probe) sync() {
	ack := make(chan struct{})
	select {
	case p.drained <- ack:
	case <-p.done:
		return
	}
	_ = p.reader.Flush()
	select {
	case <-ack:
	case <-p.done:
	}
}

// Close detaches everything, stops the reader and frees the maps. It is
// safe to call more than once.
func (p *Probe) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		var errs []error
		for name, w := range p.targets {
			errs = append(errs, p.dropLocked(w))
			delete(p.targets, name)
		}
		errs = append(errs, p.att.close())
		p.mu.Unlock()
		p.reader.Close()
		<-p.done
		p.closeMaps()
		err = errors.Join(errs...)
	})
	return err
}

// Hists is a set of hop histograms by hop name.
type Hists map[string]*hdrhistogram.Histogram

func (hs Hists) get(name string) *hdrhistogram.Histogram {
	h, ok := hs[name]
	if !ok {
		h = hist.New()
		hs[name] = h
	}
	return h
}
