// Package kube is the bench backend for a Kubernetes cluster (`hopscope
// bench --kube`): for each run it makes a namespace annotated for the mesh's
// sidecar injection (linkerd.io/inject, sidecar.istio.io/inject), deploys the
// test app and a load generator pod from the hopscope image, drives the
// plan's load, reads the client's result from the generator's log, and
// gathers each run's hop histograms and resources from the node agents' run
// windows (package agent). Everything it creates is deleted at the end of
// each run, also after Ctrl-C, and leftovers of a killed run are found by
// label. It must not install meshes or the agents themselves (deploy/ and
// the mesh's own installer do) nor compute statistics (package bench does).
package kube
