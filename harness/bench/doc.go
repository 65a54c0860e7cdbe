// Package bench runs hopscope experiments: scenarios (baseline and each
// proxy) x rates x runs, interleaved so that drift on the machine hits every
// scenario alike, each run on a freshly built deployment (the lab on this
// machine, a cluster through another Backend). It checks each run against
// what it asked for (rate, errors, probe drops), keeps invalid runs out of
// the aggregates with the reason, and computes both the published statistics
// (mean and one standard deviation of per-run percentiles after dropping the
// runs with the highest baseline maximum) and pooled histograms with
// confidence intervals. It must not render reports (package report does) nor
// build namespaces or proxies itself (the Backend does).
package bench
