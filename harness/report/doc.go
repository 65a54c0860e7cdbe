// Package report turns an experiment (package bench) into what a person
// reads: summary.md, tables laid out like the published mesh benchmark
// findings (per rate, each scenario's median, p99 and max, the latency each
// proxy adds over baseline, a winner line, a resources table and each
// proxy's hop breakdown), and report.html, the same with charts drawn as
// inline SVG so the file opens anywhere without a network. It must not
// compute statistics (bench does) nor read anything but the experiment.
package report
