package deploy

// The systemd units, read with go-systemd's unit parser, checked against
// the binaries' flag sets and the edge's drain timeout; and, where
// systemd-analyze is installed, verified by systemd itself.

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

// unitSpec is what one unit must say.
type unitSpec struct {
	bin      string        // the binary, /usr/local/bin/<bin>
	flagSet  string        // its flag set's name in cmd/<bin>
	sub      string        // subcommand before the flags, if any
	stop     time.Duration // how long a graceful stop may take
	bindLow  bool          // binds ports below 1024
	upgrades bool          // tableflip: --pid-file and SIGUSR2
}

func unitSpecs(t *testing.T) map[string]unitSpec {
	drain := defaultDrain
	cfg, _, err := loadEdgeConfig(t, readFile(t, filepath.Join(repoRoot, "edge", "testdata", "edge.yaml")))
	if err != nil {
		t.Fatalf("edge/testdata/edge.yaml: %v", err)
	}
	if cfg.Limits.DrainTimeout > drain {
		drain = cfg.Limits.DrainTimeout
	}
	return map[string]unitSpec{
		"keyedge.service":   {bin: "keyedge", flagSet: "keyedge serve", sub: "serve", stop: drain, bindLow: true, upgrades: true},
		"keyserver.service": {bin: "keyserver", flagSet: "keyserver", stop: time.Duration(constSeconds(t, "keyserver", "shutdownTimeout")) * time.Second},
	}
}

func TestSystemdUnits(t *testing.T) {
	for name, spec := range unitSpecs(t) {
		t.Run(name, func(t *testing.T) {
			for _, p := range checkUnit(t, spec, readFile(t, filepath.Join("systemd", name))) {
				t.Error(p)
			}
		})
	}
}

// checkUnit parses a unit file and checks its [Service] section.
func checkUnit(t *testing.T, spec unitSpec, text string) problems {
	var p problems
	sections, err := unit.DeserializeSections(strings.NewReader(text))
	if err != nil {
		p.add("%s: %v", spec.bin, err)
		return p
	}
	svc := map[string][]string{}
	seen := map[string]bool{}
	for _, s := range sections {
		if seen[s.Section] {
			p.add("%s: section [%s] twice", spec.bin, s.Section)
		}
		seen[s.Section] = true
		if s.Section != "Service" {
			continue
		}
		for _, e := range s.Entries {
			svc[e.Name] = append(svc[e.Name], e.Value)
		}
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if !seen[s] {
			p.add("%s: no [%s] section", spec.bin, s)
		}
	}
	one := func(k string) string {
		v := svc[k]
		if len(v) != 1 {
			if len(v) > 1 {
				p.add("%s: %s set %d times", spec.bin, k, len(v))
			}
			return ""
		}
		return v[0]
	}
	want := func(k, v string) {
		if got := one(k); got != v {
			p.add("%s: %s=%q, want %q", spec.bin, k, got, v)
		}
	}

	// Type=simple: the binaries do not speak sd_notify.
	want("Type", "simple")
	if u := one("User"); u == "" || u == "root" || u == "0" {
		p.add("%s: User=%q: run as a dedicated unprivileged user", spec.bin, u)
	}
	want("ExecReload", "/bin/kill -HUP $MAINPID")
	want("KillMode", "mixed")
	want("Restart", "on-failure")
	if d, err := time.ParseDuration(one("TimeoutStopSec")); err != nil || d <= spec.stop {
		p.add("%s: TimeoutStopSec=%q must exceed the graceful stop (%v)", spec.bin, one("TimeoutStopSec"), spec.stop)
	}
	for _, k := range []string{"NoNewPrivileges", "ProtectHome", "PrivateTmp"} {
		want(k, "yes")
	}
	want("ProtectSystem", "strict")
	if n, err := strconv.Atoi(one("LimitNOFILE")); err != nil || n < 65536 {
		p.add("%s: LimitNOFILE=%q: want at least 65536", spec.bin, one("LimitNOFILE"))
	}
	if spec.bindLow {
		want("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE")
		want("AmbientCapabilities", "CAP_NET_BIND_SERVICE")
	} else {
		want("CapabilityBoundingSet", "")
	}
	state := one("StateDirectory")
	if state == "" || !strings.Contains(" "+one("ReadWritePaths")+" ", " /var/lib/"+state+" ") {
		p.add("%s: ReadWritePaths=%q must include the keystore's /var/lib/%s (StateDirectory=%q)", spec.bin, one("ReadWritePaths"), state, state)
	}

	// ExecStart: the installed binary, with flags it has.
	args := strings.Fields(one("ExecStart"))
	if len(args) == 0 || args[0] != "/usr/local/bin/"+spec.bin {
		p.add("%s: ExecStart=%q: want /usr/local/bin/%s", spec.bin, one("ExecStart"), spec.bin)
		return p
	}
	args = args[1:]
	if spec.sub != "" {
		if len(args) == 0 || args[0] != spec.sub {
			p.add("%s: ExecStart: want the %s subcommand", spec.bin, spec.sub)
			return p
		}
		args = args[1:]
	}
	flags := flagSet(t, spec.bin, spec.flagSet)
	values, rest, err := flags.parseArgs(args)
	if err != nil || len(rest) > 0 {
		p.add("%s: ExecStart: %v (left over %q)", spec.bin, err, rest)
		return p
	}
	if c := values["config"]; !path.IsAbs(c) {
		p.add("%s: ExecStart: --config %q: want an absolute path", spec.bin, c)
	}
	if spec.upgrades {
		pid := values["pid-file"]
		want("PIDFile", pid)
		rt := one("RuntimeDirectory")
		if pid == "" || rt == "" || path.Dir(pid) != "/run/"+rt {
			p.add("%s: --pid-file %q must be in /run/<RuntimeDirectory> (RuntimeDirectory=%q), which systemd creates for the user", spec.bin, pid, rt)
		}
		if !strings.Contains(text, "SIGUSR2") || !strings.Contains(text, "systemctl kill") {
			p.add("%s: the unit must document upgrades with SIGUSR2 (systemctl kill)", spec.bin)
		}
	} else if len(svc["PIDFile"]) > 0 {
		p.add("%s: PIDFile without a process that writes it", spec.bin)
	}
	return p
}

// TestSystemdChecksCatch breaks the edge unit one way at a time.
func TestSystemdChecksCatch(t *testing.T) {
	specs := unitSpecs(t)
	src := readFile(t, filepath.Join("systemd", "keyedge.service"))
	cases := []struct{ name, old, new, want string }{
		{"notify", "Type=simple", "Type=notify", "Type"},
		{"pid file", "PIDFile=/run/keyedge/keyedge.pid", "PIDFile=/run/keyedge.pid", "PIDFile"},
		{"flag", "--config /etc", "--conf /etc", "not defined"},
		{"relative config", "--config /etc/keyedge/edge.yaml", "--config edge.yaml", "absolute"},
		{"stop timeout", "TimeoutStopSec=45s", "TimeoutStopSec=20s", "TimeoutStopSec"},
		{"root", "User=keyedge", "User=root", "User"},
		{"capabilities", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SYS_ADMIN", "CapabilityBoundingSet"},
		{"protect system", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"state dir", "ReadWritePaths=/var/lib/keyedge", "ReadWritePaths=/var/lib/keyedge2", "ReadWritePaths"},
		{"reload", "ExecReload=/bin/kill -HUP $MAINPID", "ExecReload=/bin/kill -USR2 $MAINPID", "ExecReload"},
		{"runtime dir", "RuntimeDirectory=keyedge", "RuntimeDirectory=edge", "RuntimeDirectory"},
		{"kill mode", "KillMode=mixed", "KillMode=process", "KillMode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("%q not in keyedge.service: update the test case", tc.old)
			}
			got := checkUnit(t, specs["keyedge.service"], strings.Replace(src, tc.old, tc.new, 1))
			for _, p := range got {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("broken unit passed: want a problem containing %q, got %q", tc.want, got)
		})
	}
}

// TestSystemdAnalyzeVerify has systemd itself load the units, where
// systemd-analyze is installed: unknown directives and bad values, which
// go-systemd's parser does not know, fail here. ExecStart is pointed at a
// stand-in executable, since the binaries are not installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	units := map[string]string{}
	for name, spec := range unitSpecs(t) {
		units[name] = strings.ReplaceAll(readFile(t, filepath.Join("systemd", name)), "/usr/local/bin/"+spec.bin, "@true@")
	}
	analyzeVerify(t, units)
}

// analyzeVerify runs systemd-analyze verify on units (file name ->
// text), skipping the test where it is not installed; "@true@" in a
// text is replaced by the path of true(1), to stand in for a binary
// that is not installed.
func analyzeVerify(t *testing.T, units map[string]string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	stand, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to stand in for the binaries")
	}
	dir := t.TempDir()
	var files []string
	for name, text := range units {
		u := filepath.Join(dir, name)
		if err := os.WriteFile(u, []byte(strings.ReplaceAll(text, "@true@", stand)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, u)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
