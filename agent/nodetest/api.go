package nodetest

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// FailPods makes the fake API server answer every pod list and watch with
// err (Forbidden, a dial error, ...) until the returned function is called.
func FailPods(c *fake.Clientset, err error) (recover func()) {
	var mu sync.Mutex
	failing := true
	c.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		return failing, nil, err
	})
	c.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		return failing, nil, err
	})
	return func() {
		mu.Lock()
		failing = false
		mu.Unlock()
	}
}
