package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"
)

// ProxySpec says which sidecar proxy a mesh lab runs; the same proxy serves
// both sidecars.
type ProxySpec struct {
	// Name is a built-in ("reference", "haproxy", "nginx", "caddy") or, with
	// Command, any name for a custom proxy.
	Name string `json:"name"`
	// Command, for a custom proxy, is a text/template of the command line
	// with {{.Listen}} and {{.Upstream}} (HOST:PORT) and {{.ConfigDir}} (a
	// directory of its own for config, pid and log files); also
	// {{.ListenHost}}, {{.ListenPort}}, {{.Role}} (client or server) and
	// {{.GRPC}} (true when the lab speaks gRPC). It runs through
	// sh -c "exec ...".
	Command string `json:"command,omitempty"`
	// Delay is added by the server-side reference proxy to every request
	// (ground truth for tests); reference proxy only.
	Delay time.Duration `json:"delay,omitempty"`
	// Stamps makes the reference proxies write per-request stamps to
	// <ConfigDir>/stamps.csv (Lab.ProxyStamps); reference proxy only.
	Stamps bool `json:"stamps,omitempty"`
}

// ParseProxy parses a --proxy value: a built-in name, or
// NAME='COMMAND with {{.Listen}} {{.Upstream}} {{.ConfigDir}}'.
func ParseProxy(s string) (ProxySpec, error) {
	name, cmd, custom := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,30}$`).MatchString(name) {
		return ProxySpec{}, fmt.Errorf("proxy name %q: want lowercase letters, digits, '-' or '_' (up to 31)", name)
	}
	if !custom {
		if _, ok := builtins[name]; !ok {
			return ProxySpec{}, fmt.Errorf("proxy %q is not a built-in (%s): give a command, --proxy %s='COMMAND with {{.Listen}} {{.Upstream}} {{.ConfigDir}}'", name, strings.Join(builtinNames(), ", "), name)
		}
		return ProxySpec{Name: name}, nil
	}
	if _, ok := builtins[name]; ok {
		return ProxySpec{}, fmt.Errorf("proxy name %q is a built-in: name your command differently", name)
	}
	if strings.TrimSpace(cmd) == "" {
		return ProxySpec{}, fmt.Errorf("proxy %s: empty command", name)
	}
	p := ProxySpec{Name: name, Command: cmd}
	if _, err := p.render(sidecarData{Listen: "127.0.0.1:1", Upstream: "127.0.0.1:2", ConfigDir: "/tmp/x"}); err != nil {
		return ProxySpec{}, err
	}
	return p, nil
}

// sidecarData is what proxy templates see.
type sidecarData struct {
	Listen, Upstream string // HOST:PORT
	ListenHost       string
	ListenPort       string
	ConfigDir        string
	Role             string // "client" or "server"
	Hopscope         string // the hopscope binary
	Delay            time.Duration
	Stamps           string // stamps file, or ""
	GRPC             bool   // the lab speaks gRPC (HTTP/2 cleartext) instead of HTTP/1.1
}

// builtin is a proxy hopscope knows how to configure.
type builtin struct {
	binary  string // looked up on PATH
	install string // how to get it
	version []string
	config  string // file name in ConfigDir
	tmpl    string // config file template
	command string // command line template
}

var builtins = map[string]builtin{
	"reference": {
		install: "built into hopscope",
		command: `{{.Hopscope}} proxy -q --listen {{.Listen}} --upstream {{.Upstream}}{{if .Delay}} --delay {{.Delay}}{{end}}{{if .Stamps}} --stamps {{.Stamps}}{{end}}{{if .GRPC}} --h2c{{end}}`,
	},
	"haproxy": {
		binary:  "haproxy",
		install: "apt-get install haproxy",
		version: []string{"-v"},
		config:  "haproxy.cfg",
		// -db: foreground; the pid file lives in ConfigDir so several run
		// at once. http-reuse keeps upstream connections alive.
		tmpl: `global
    pidfile {{.ConfigDir}}/haproxy.pid
    maxconn 4096
    nbthread 1
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend sidecar
    bind {{.Listen}}{{if .GRPC}} proto h2{{end}}
    default_backend upstream
backend upstream
    server up {{.Upstream}}{{if .GRPC}} proto h2{{end}}
`,
		command: `haproxy -db -f {{.ConfigDir}}/haproxy.cfg`,
	},
	"nginx": {
		binary:  "nginx",
		install: "apt-get install nginx-light",
		version: []string{"-v"},
		config:  "nginx.conf",
		// daemon off keeps it in the foreground; pid, logs and temp files
		// in ConfigDir (not /run, /var/log) so several run at once.
		tmpl: `daemon off;
worker_processes 1;
pid {{.ConfigDir}}/nginx.pid;
error_log {{.ConfigDir}}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{.ConfigDir}}/tmp-body;
    proxy_temp_path {{.ConfigDir}}/tmp-proxy;
    fastcgi_temp_path {{.ConfigDir}}/tmp-fastcgi;
    uwsgi_temp_path {{.ConfigDir}}/tmp-uwsgi;
    scgi_temp_path {{.ConfigDir}}/tmp-scgi;
    keepalive_requests 1000000;
    upstream up {
        server {{.Upstream}};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
{{- if .GRPC}}
        listen {{.Listen}} http2;
        http2_max_requests 1000000;
        location / {
            grpc_pass grpc://up;
        }
{{- else}}
        listen {{.Listen}};
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
{{- end}}
    }
}
`,
		command: `nginx -p {{.ConfigDir}} -e {{.ConfigDir}}/error.log -c {{.ConfigDir}}/nginx.conf`,
	},
	"caddy": {
		binary:  "caddy",
		install: "apt-get install caddy",
		version: []string{"version"},
		config:  "Caddyfile",
		// No admin endpoint (its port 2019 would clash between sidecars),
		// no automatic HTTPS; reverse_proxy keeps HTTP/1.1 connections alive.
		tmpl: `{
	admin off
	auto_https off
{{- if .GRPC}}
	servers {
		protocols h1 h2c
	}
{{- end}}
}
http://:{{.ListenPort}} {
	bind {{.ListenHost}}
	reverse_proxy {{if .GRPC}}h2c://{{end}}{{.Upstream}}
}
`,
		command: `caddy run --adapter caddyfile --config {{.ConfigDir}}/Caddyfile`,
	},
}

func builtinNames() []string {
	var out []string
	for n := range builtins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ProxyInfo says whether a built-in proxy can run here.
type ProxyInfo struct {
	Name      string `json:"name"`
	Installed bool   `json:"installed"`
	Path      string `json:"path,omitempty"`
	Version   string `json:"version,omitempty"`
	Install   string `json:"install"` // how to install it
}

// Proxies lists the built-in proxies, installed or not, with an install
// hint for those that are not.
func Proxies() []ProxyInfo {
	var out []ProxyInfo
	for _, n := range builtinNames() {
		out = append(out, proxyInfo(n))
	}
	return out
}

func proxyInfo(name string) ProxyInfo {
	b := builtins[name]
	pi := ProxyInfo{Name: name, Install: b.install}
	if b.binary == "" {
		pi.Installed = true
		return pi
	}
	path, err := exec.LookPath(b.binary)
	if err != nil {
		return pi
	}
	pi.Installed, pi.Path = true, path
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, path, b.version...).CombinedOutput()
	if l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); l != "" {
		pi.Version = l
	}
	return pi
}

// check says why p cannot run here, with the fix, starting nothing.
// hopscope is the binary a template may name as {{.Hopscope}}.
func (p ProxySpec) check(hopscope string) error {
	if p.Name == "" {
		return fmt.Errorf("no proxy given for the mesh topology: pick one of %s or --proxy NAME='COMMAND'", strings.Join(builtinNames(), ", "))
	}
	b, isBuiltin := builtins[p.Name]
	if p.Command == "" && !isBuiltin {
		return fmt.Errorf("proxy %q is not a built-in (%s): give a command, --proxy %s='COMMAND with {{.Listen}} {{.Upstream}} {{.ConfigDir}}'", p.Name, strings.Join(builtinNames(), ", "), p.Name)
	}
	if p.Name != "reference" && (p.Delay != 0 || p.Stamps) {
		return fmt.Errorf("proxy %s: delay and stamps are features of the reference proxy only", p.Name)
	}
	if p.Command == "" && b.binary != "" {
		if _, err := exec.LookPath(b.binary); err != nil {
			return fmt.Errorf("proxy %s is not installed (%s not on PATH): %s", p.Name, b.binary, b.install)
		}
	}
	if p.Command != "" {
		argv, err := p.render(sidecarData{Listen: "127.0.0.1:1", Upstream: "127.0.0.1:2", ConfigDir: "/tmp", Hopscope: hopscope})
		if err != nil {
			return err
		}
		first := strings.Fields(strings.TrimPrefix(argv[2], "exec "))
		if len(first) == 0 {
			return fmt.Errorf("proxy %s: command renders empty", p.Name)
		}
		if _, err := exec.LookPath(first[0]); err != nil {
			return fmt.Errorf("proxy %s: %s not found: install it or give its full path", p.Name, first[0])
		}
	}
	return nil
}

// render returns the argv of one sidecar, writing a built-in's config file
// into d.ConfigDir (when it exists).
func (p ProxySpec) render(d sidecarData) ([]string, error) {
	if h, port, err := net.SplitHostPort(d.Listen); err == nil {
		d.ListenHost, d.ListenPort = h, port
	}
	exec1 := func(name, text string) (string, error) {
		t, err := template.New(name).Option("missingkey=error").Parse(text)
		if err != nil {
			return "", fmt.Errorf("proxy %s: template does not parse: %w (fields: {{.Listen}} {{.Upstream}} {{.ConfigDir}} {{.ListenHost}} {{.ListenPort}} {{.Role}})", p.Name, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, d); err != nil {
			return "", fmt.Errorf("proxy %s: template does not render: %w (fields: {{.Listen}} {{.Upstream}} {{.ConfigDir}} {{.ListenHost}} {{.ListenPort}} {{.Role}})", p.Name, err)
		}
		return buf.String(), nil
	}
	if p.Command != "" {
		line, err := exec1("command", p.Command)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(line) == "" {
			return nil, fmt.Errorf("proxy %s: command renders empty", p.Name)
		}
		return []string{"sh", "-c", "exec " + line}, nil
	}
	b := builtins[p.Name]
	if b.tmpl != "" {
		conf, err := exec1(b.config, b.tmpl)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(d.ConfigDir); err == nil {
			if err := os.WriteFile(filepath.Join(d.ConfigDir, b.config), []byte(conf), 0o644); err != nil {
				return nil, fmt.Errorf("proxy %s: write config: %w", p.Name, err)
			}
		}
	}
	line, err := exec1("command", b.command)
	if err != nil {
		return nil, err
	}
	return strings.Fields(line), nil
}
