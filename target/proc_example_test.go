package target_test

import (
	"fmt"

	"github.com/hopscope/hopscope/target"
)

func ExampleParseContainerID() {
	for _, s := range []string{
		"containerd://4f1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e",
		"docker://4f1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e",
	} {
		id, err := target.ParseContainerID(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(id.Runtime, id.ID[:12])
	}
	// Output:
	// containerd 4f1c2b9d8e7a
	// error: container ID "docker://4f1c2b9d8e7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e": the docker runtime (dockershim, cri-dockerd) is not supported: need containerd or CRI-O
}

func ExampleParseCgroupFile() {
	// /proc/PID/cgroup of a CRI-O container on a hybrid host
	unified, v1, _ := target.ParseCgroupFile("4:memory:/kubepods/besteffort/pod7/crio-4f1c\n0::/\n")
	fmt.Printf("v2 %q, memory %q\n", unified, v1["memory"])
	// Output: v2 "/", memory "/kubepods/besteffort/pod7/crio-4f1c"
}
