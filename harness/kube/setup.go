package kube

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/hopscope/hopscope/target"
)

// Options are `hopscope bench --kube`'s flags.
type Options struct {
	target.KubeConn
	Mesh           string
	Image          string
	AgentNamespace string
	AgentSecret    string
	AgentPort      int
}

// AddFlags adds --kubeconfig, --context, --mesh, --image and the agents'
// namespace, Secret and port.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.KubeConn.AddFlags(fs)
	fs.StringVar(&o.Mesh, "mesh", "", "with --kube: the cluster's mesh, linkerd, istio or none (baseline only)")
	fs.StringVar(&o.Image, "image", "ghcr.io/hopscope/hopscope:latest", "with --kube: the hopscope image that runs the app and the load generator")
	fs.StringVar(&o.AgentNamespace, "agent-namespace", "hopscope", "with --kube: namespace of the node agents (deploy/)")
	fs.StringVar(&o.AgentSecret, "agent-secret", "hopscope-agent-token", "with --kube: Secret holding the agents' bearer token (key 'token')")
	fs.IntVar(&o.AgentPort, "agent-port", 9464, "with --kube: the agents' port")
}

// Setup connects to the cluster and returns the backend and the observer
// that reads the agents' windows: what a bench.Runner needs.
func Setup(ctx context.Context, o Options) (*Backend, *AgentObserver, error) {
	client, err := o.Client()
	if err != nil {
		return nil, nil, err
	}
	b, err := NewBackend(client, Config{Mesh: o.Mesh, Image: o.Image})
	if err != nil {
		return nil, nil, err
	}
	tok, err := AgentToken(ctx, client, o.AgentNamespace, o.AgentSecret)
	if err != nil {
		return nil, nil, err
	}
	obs := &AgentObserver{Agents: &ProxyAgents{Client: client, Namespace: o.AgentNamespace,
		Selector: "app.kubernetes.io/name=hopscope-agent", Port: o.AgentPort, Token: tok}}
	return b, obs, nil
}
