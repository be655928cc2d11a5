package deploy

// The identity renewal units for hosts (systemd/keyedge-identity@.service
// and .timer): the timer against the identities' validity, the service's
// command line and privileges; and, where systemd-analyze is installed,
// systemd's own verification of an instance of each.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

const (
	identityService = "keyedge-identity@.service"
	identityTimer   = "keyedge-identity@.timer"
)

// unitEntries parses a unit file into section -> key -> values.
func unitEntries(text string) (map[string]map[string][]string, error) {
	sections, err := unit.DeserializeSections(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := map[string]map[string][]string{}
	for _, s := range sections {
		if out[s.Section] == nil {
			out[s.Section] = map[string][]string{}
		}
		for _, e := range s.Entries {
			out[s.Section][e.Name] = append(out[s.Section][e.Name], e.Value)
		}
	}
	return out, nil
}

// identityUnitCommand is the service's keyctl command line for an edge
// named edge-fra1 (instance keyedge), as systemd would run it.
func identityUnitCommand(t *testing.T) keyctlIdentity {
	t.Helper()
	u, err := unitEntries(readFile(t, filepath.Join("systemd", identityService)))
	if err != nil {
		t.Fatal(err)
	}
	exec := strings.Fields(strings.NewReplacer("${IDENTITY_NAME}", "edge-fra1", "%i", "keyedge").Replace(strings.Join(u["Service"]["ExecStart"], " ")))
	if len(exec) < 2 || exec[0] != "/usr/local/bin/keyctl" {
		t.Fatalf("%s: ExecStart %q: want /usr/local/bin/keyctl identity ...", identityService, exec)
	}
	var p problems
	id := parseIdentityArgs(identityService, exec[1:], &p)
	for _, problem := range p {
		t.Error(problem)
	}
	return id
}

func TestIdentityUnits(t *testing.T) {
	for _, p := range checkIdentityUnits(t, readFile(t, filepath.Join("systemd", identityService)), readFile(t, filepath.Join("systemd", identityTimer))) {
		t.Error(p)
	}
}

// checkIdentityUnits checks the service and its timer.
func checkIdentityUnits(t *testing.T, service, timer string) problems {
	var p problems
	svc, err := unitEntries(service)
	if err != nil {
		p.add("%s: %v", identityService, err)
		return p
	}
	tm, err := unitEntries(timer)
	if err != nil {
		p.add("%s: %v", identityTimer, err)
		return p
	}
	one := func(u map[string]map[string][]string, file, section, key string) string {
		v := u[section][key]
		if len(v) != 1 {
			p.add("%s: [%s] %s set %d times, want once", file, section, key, len(v))
			return ""
		}
		return v[0]
	}
	s := func(key string) string { return one(svc, identityService, "Service", key) }
	want := func(key, v string) {
		if got := s(key); got != v {
			p.add("%s: %s=%q, want %q", identityService, key, got, v)
		}
	}

	// The service: one run of keyctl identity at the default validity,
	// into the state directory, handed to the instance's user, with no
	// privilege but chown and no network.
	want("Type", "oneshot")
	want("CapabilityBoundingSet", "CAP_CHOWN")
	want("PrivateNetwork", "yes")
	want("ProtectSystem", "strict")
	want("NoNewPrivileges", "yes")
	want("UMask", "0077")
	want("Group", "%i")
	args := strings.Fields(s("ExecStart"))
	if len(args) < 2 || args[0] != "/usr/local/bin/keyctl" || args[1] != "identity" {
		p.add("%s: ExecStart %q: want /usr/local/bin/keyctl identity ...", identityService, args)
		return p
	}
	id := parseIdentityArgs(identityService, args[1:], &p)
	if id.valid != identityValidity {
		p.add("%s: --valid %v, want %v", identityService, id.valid, identityValidity)
	}
	state := "/var/lib/" + s("StateDirectory")
	if filepath.Dir(id.out) != state || !strings.Contains(" "+s("ReadWritePaths")+" ", " "+state+" ") {
		p.add("%s: --out %s: want a file in the StateDirectory %s, which ReadWritePaths lists", identityService, id.out, state)
	}
	if !strings.HasPrefix(s("ReadOnlyPaths"), filepath.Dir(id.ca)) {
		p.add("%s: --ca %s: its directory must be in ReadOnlyPaths (%q)", identityService, id.ca, s("ReadOnlyPaths"))
	}
	if post := s("ExecStartPost"); post != "/bin/chown %i:%i "+id.out+".pem "+id.out+".key" {
		p.add("%s: ExecStartPost %q: want the files chowned to the instance's user, which reads them", identityService, post)
	}

	// The timer: at boot, and often enough that an identity is replaced
	// before two thirds of its validity have passed.
	if one(tm, identityTimer, "Timer", "OnBootSec") == "" {
		p.add("%s: no OnBootSec: a host that was down past the expiry would wait a whole period", identityTimer)
	}
	var worst time.Duration
	for _, k := range []string{"OnUnitActiveSec", "RandomizedDelaySec", "AccuracySec"} {
		v := one(tm, identityTimer, "Timer", k)
		d, err := time.ParseDuration(v)
		if err != nil {
			p.add("%s: %s=%q: %v", identityTimer, k, v, err)
		}
		worst += d
	}
	if limit := identityValidity * 2 / 3; worst > limit {
		p.add("%s: up to %v between runs, more than two thirds (%v) of the %v validity", identityTimer, worst, limit, identityValidity)
	}
	if got := one(tm, identityTimer, "Install", "WantedBy"); got != "timers.target" {
		p.add("%s: WantedBy=%q, want timers.target", identityTimer, got)
	}
	return p
}

// TestIdentityUnitChecksCatch breaks the units one way at a time.
func TestIdentityUnitChecksCatch(t *testing.T) {
	service := readFile(t, filepath.Join("systemd", identityService))
	timer := readFile(t, filepath.Join("systemd", identityTimer))
	cases := []struct {
		name, file, old, new, want string
	}{
		{"daily", identityTimer, "OnUnitActiveSec=15h", "OnUnitActiveSec=24h", "two thirds"},
		{"jitter", identityTimer, "RandomizedDelaySec=30m", "RandomizedDelaySec=2h", "two thirds"},
		{"no boot run", identityTimer, "OnBootSec=1m\n", "", "OnBootSec"},
		{"validity", identityService, "--valid 24h", "--valid 720h", "--valid 720h0m0s"},
		{"network", identityService, "PrivateNetwork=yes", "PrivateNetwork=no", "PrivateNetwork"},
		{"capabilities", identityService, "CapabilityBoundingSet=CAP_CHOWN", "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE", "CapabilityBoundingSet"},
		{"no chown", identityService, "ExecStartPost=/bin/chown %i:%i /var/lib/%i/identity/identity.pem /var/lib/%i/identity/identity.key\n", "", "ExecStartPost"},
		{"out elsewhere", identityService, "--out /var/lib/%i/identity/identity", "--out /etc/%i/identity", "StateDirectory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{identityService: service, identityTimer: timer}
			replaceIn(t, files, tc.file, tc.old, tc.new)
			wantProblem(t, checkIdentityUnits(t, files[identityService], files[identityTimer]), tc.want)
		})
	}
}

// TestIdentityUnitsAnalyzeVerify has systemd load an instance of each
// unit, where systemd-analyze is installed, with ExecStart pointed at a
// stand-in for keyctl.
func TestIdentityUnitsAnalyzeVerify(t *testing.T) {
	units := map[string]string{}
	for file, instance := range map[string]string{identityService: "keyedge-identity@keyedge.service", identityTimer: "keyedge-identity@keyedge.timer"} {
		units[instance] = strings.ReplaceAll(readFile(t, filepath.Join("systemd", file)), "/usr/local/bin/keyctl", "@true@")
	}
	analyzeVerify(t, units)
}
