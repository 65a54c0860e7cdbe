// Package spawn starts a command inside a network namespace and a set of
// cgroups, from a process that stays where it is. Go cannot move a whole
// process into a namespace, and exec.Cmd has no "join this netns" field, so
// spawn re-executes the current binary: the child's init locks its thread,
// joins the namespace, writes itself into each cgroup.procs, and execs the
// real command, which thus starts already inside. Every binary that imports
// spawn (hopscope and the test binaries) can act as that trampoline. It must
// not create namespaces or cgroups: callers own those.
package spawn
