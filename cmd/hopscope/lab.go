package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/harness/lab"
)

func init() {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build, show and remove the single-machine lab (pods as network namespaces, sidecar proxies)",
	}
	cmd.AddCommand(labUpCmd(), labStatusCmd(), labDownCmd(), labProxiesCmd())
	root.AddCommand(cmd)
}

func labUpCmd() *cobra.Command {
	var (
		spec      lab.Spec
		proxy     string
		subnet    string
		appArgs   string
		delay     time.Duration
		stamps    bool
		cgroupDir string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Bring a lab up and leave it running (hopscope lab down removes it)",
		Example: `  hopscope lab up                                   # baseline: client pod -> app in the server pod
  hopscope lab up --topology mesh --proxy nginx
  hopscope lab up --proxy reference --delay 2ms --stamps
  hopscope lab up --proxy my='myproxy --listen {{.Listen}} --upstream {{.Upstream}} --dir {{.ConfigDir}}'
  ip netns exec hopscope-lab-client hopscope load --rate 200 --duration 10s http://127.0.0.1:15001/`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if proxy != "" {
				p, err := lab.ParseProxy(proxy)
				if err != nil {
					return usagef("lab up: --proxy: %v", err)
				}
				spec.Proxy = p
			}
			spec.Proxy.Delay, spec.Proxy.Stamps = delay, stamps
			if subnet != "" {
				p, err := netip.ParsePrefix(subnet)
				if err != nil {
					return usagef("lab up: --subnet %q: want a prefix such as 198.19.7.0/24", subnet)
				}
				spec.Subnet = p
			}
			spec.AppArgs = strings.Fields(appArgs)
			spec.CgroupRoot = cgroupDir
			spec.Detach = true
			l, err := lab.Up(c.Context(), spec)
			if err != nil {
				if isSpecError(err) {
					return usagef("lab up: %v", err)
				}
				return fmt.Errorf("lab up: %w", err)
			}
			st, err := lab.Status(l.Spec.Name)
			if err != nil {
				return err
			}
			printLab(c.OutOrStdout(), st)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Name, "name", lab.DefaultName, "lab name (names its namespaces, cgroups and state)")
	f.StringVar(&spec.Topology, "topology", "", "baseline or mesh (default: mesh with --proxy, else baseline)")
	f.StringVar(&spec.Protocol, "protocol", "http", "http (HTTP/1.1) or grpc (the app's gRPC echo over h2c)")
	f.StringVar(&proxy, "proxy", "", "sidecar proxy: reference, haproxy, nginx, caddy, or NAME='COMMAND with {{.Listen}} {{.Upstream}} {{.ConfigDir}}'")
	f.DurationVar(&delay, "delay", 0, "server-side reference proxy adds this to every request (ground truth)")
	f.BoolVar(&stamps, "stamps", false, "reference proxies write per-request stamps to <state dir>/<side>-proxy/stamps.csv")
	f.BoolVar(&spec.Intercept, "intercept", false, "redirect app traffic into the sidecars with nftables (mesh init-container style)")
	f.StringVar(&subnet, "subnet", "", "pods' subnet inside 198.18.0.0/15 (default: chosen from the name)")
	f.StringVar(&appArgs, "app-args", "", "extra arguments for hopscope app in the server pod, e.g. '--delay 1ms --size 512'")
	f.StringVar(&cgroupDir, "cgroup-root", "/hopscope", "cgroup the lab's processes go under (<root>/<name>/<pod>-<proc>)")
	f.Uint16Var(&spec.Ports.App, "app-port", 8080, "app port")
	f.Uint16Var(&spec.Ports.Inbound, "inbound-port", 15006, "server sidecar port")
	f.Uint16Var(&spec.Ports.Outbound, "outbound-port", 15001, "client sidecar port (on 127.0.0.1 in the client pod)")
	return cmd
}

// isSpecError tells a mistake in the command line from a failure to run.
func isSpecError(err error) bool {
	s := err.Error()
	for _, w := range []string{"lab name", "topology", "protocol", "proxy name", "not a built-in", "no proxy given", "template", "want three different ports", "subnet", "cgroup root", "interception needs", "reference proxy only", "for the baseline topology"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

func labStatusCmd() *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the labs that are up: pods, addresses, processes, URL",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			names := lab.Labs()
			if name != "" {
				names = []string{name}
			}
			if len(names) == 0 {
				fmt.Fprintln(c.OutOrStdout(), "no lab is up")
				return nil
			}
			var all []lab.State
			for _, n := range names {
				st, err := lab.Status(n)
				if err != nil {
					return err
				}
				all = append(all, st)
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			for _, st := range all {
				printLab(c.OutOrStdout(), st)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "only this lab (default: every lab that is up)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON (targets included)")
	return cmd
}

func printLab(w io.Writer, st lab.State) {
	proxy := ""
	if st.Spec.Proxy.Name != "" {
		proxy = " proxy " + st.Spec.Proxy.Name
	}
	fmt.Fprintf(w, "lab %s: %s%s, state in %s\n", st.Spec.Name, st.Spec.Topology, proxy, st.Dir)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  POD\tNETNS\tADDRESS\tHOST VETH\tBRIDGE")
	for _, p := range st.Pods {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Name, p.Netns, p.Addr, p.HostPeer, p.Bridge)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PROCESS\tPID\tSTATE\tCGROUP\tCOMMAND")
	for _, p := range st.Procs {
		state := "running"
		if !p.Running {
			state = "gone"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", p.Name, p.PID, state, p.Cgroup, strings.Join(p.Argv, " "))
	}
	tw.Flush()
	if st.URL != "" && len(st.Pods) > 0 {
		fmt.Fprintf(w, "  load: ip netns exec %s-client hopscope load --rate 200 --duration 10s %s\n", st.Spec.Name, st.URL)
	}
}

func labDownCmd() *cobra.Command {
	var name string
	var all bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a lab: processes, namespaces, veths, bridge, nftables rules, cgroups (also after a crash; idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("lab down needs root: run with sudo")
			}
			n := name
			if all {
				n = lab.All
			}
			if err := lab.Cleanup(n); err != nil {
				if strings.Contains(err.Error(), "lab name") {
					return usagef("lab down: %v", err)
				}
				return fmt.Errorf("lab down: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", lab.DefaultName, "lab to remove")
	cmd.Flags().BoolVar(&all, "all", false, "remove every lab (and unused lab bridges)")
	return cmd
}

func labProxiesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "proxies",
		Short: "List the built-in sidecar proxies: installed or not, version, how to install",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROXY\tINSTALLED\tVERSION / INSTALL")
			for _, p := range lab.Proxies() {
				what := p.Version
				if !p.Installed {
					what = p.Install
				} else if what == "" {
					what = p.Install
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\n", p.Name, p.Installed, what)
			}
			return tw.Flush()
		},
	}
}
