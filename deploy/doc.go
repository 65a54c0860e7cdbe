// Package deploy holds the Kubernetes manifests of hopscope's node agent
// (namespace.yaml, rbac.yaml, daemonset.yaml), embedded so that the harness
// can apply them and tests can decode them into typed client-go objects.
// The manifests grant the agent the narrowest rights that work, each with
// its reason in a comment; this package must not hold anything else.
package deploy

import (
	"embed"
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

// Files are the manifests, in the order to apply them.
var Files = []string{"namespace.yaml", "rbac.yaml", "daemonset.yaml"}

//go:embed *.yaml
var manifests embed.FS

var (
	docSep  = regexp.MustCompile(`(?m)^---\s*$`)
	content = regexp.MustCompile(`(?m)^[a-zA-Z]`) // a line that is not a comment
)

// Objects decodes every manifest, strictly (an unknown field is an error),
// into typed client-go objects, in apply order.
func Objects() ([]runtime.Object, error) {
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []runtime.Object
	for _, f := range Files {
		b, err := manifests.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range docSep.Split(string(b), -1) {
			if !content.MatchString(doc) {
				continue // only comments
			}
			obj, _, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
			}
			out = append(out, obj)
		}
	}
	return out, nil
}

// Raw returns a manifest's text.
func Raw(name string) ([]byte, error) { return manifests.ReadFile(name) }
