package app

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Delay is the service time the app adds before it answers: fixed, or drawn
// per request from a distribution. The zero value is no delay. It is a
// pflag.Value, so it can be a flag directly.
//
//	0 | 1ms           fixed
//	exp:1ms           exponential with mean 1ms
//	uniform:1ms-3ms   uniform between 1ms and 3ms
type Delay struct {
	kind string // "", "fixed", "exp", "uniform"
	a, b time.Duration
}

// ParseDelay parses a delay spec (see Delay).
func ParseDelay(s string) (Delay, error) {
	var d Delay
	err := d.Set(s)
	return d, err
}

// Set parses s into d.
func (d *Delay) Set(s string) error {
	bad := func(why string) error {
		return fmt.Errorf("delay %q: %s (want a duration like 1ms, exp:1ms or uniform:1ms-3ms)", s, why)
	}
	kind, arg, ok := strings.Cut(s, ":")
	if !ok {
		v, err := time.ParseDuration(s)
		if s == "0" {
			v, err = 0, nil
		}
		if err != nil || v < 0 {
			return bad("not a non-negative duration")
		}
		*d = Delay{kind: "fixed", a: v}
		if v == 0 {
			*d = Delay{}
		}
		return nil
	}
	switch kind {
	case "exp":
		m, err := time.ParseDuration(arg)
		if err != nil || m <= 0 {
			return bad("the mean must be a positive duration")
		}
		*d = Delay{kind: "exp", a: m}
	case "uniform":
		lo, hi, ok := strings.Cut(arg, "-")
		a, err1 := time.ParseDuration(lo)
		b, err2 := time.ParseDuration(hi)
		if !ok || err1 != nil || err2 != nil || a < 0 || b < a {
			return bad("want uniform:LOW-HIGH with 0 <= LOW <= HIGH")
		}
		*d = Delay{kind: "uniform", a: a, b: b}
	default:
		return bad("unknown distribution " + kind)
	}
	return nil
}

// String is the spec d was parsed from (in canonical form).
func (d Delay) String() string {
	switch d.kind {
	case "fixed":
		return d.a.String()
	case "exp":
		return "exp:" + d.a.String()
	case "uniform":
		return "uniform:" + d.a.String() + "-" + d.b.String()
	}
	return "0"
}

// Type names the flag's value type in help texts.
func (d Delay) Type() string { return "delay" }

// IsZero reports whether d adds no delay.
func (d Delay) IsZero() bool { return d.kind == "" }

// Mean is the expected delay.
func (d Delay) Mean() time.Duration {
	switch d.kind {
	case "fixed", "exp":
		return d.a
	case "uniform":
		return (d.a + d.b) / 2
	}
	return 0
}

// Sample draws one delay.
func (d Delay) Sample() time.Duration {
	switch d.kind {
	case "fixed":
		return d.a
	case "exp":
		return time.Duration(rand.ExpFloat64() * float64(d.a))
	case "uniform":
		if d.b == d.a {
			return d.a
		}
		return d.a + time.Duration(rand.Int64N(int64(d.b-d.a)+1))
	}
	return 0
}
