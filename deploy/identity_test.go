package deploy

// The identity renewal job (k8s/identity-renewal.yaml): its schedule
// against the identities' validity, what each container may hold, the
// Secrets it writes against what the edges and key servers mount and
// read, and its RBAC; and its keyctl command lines, run with the real
// keyctl.

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	identityJob = namespace + "/keyedge-identity"
	// identityValidity is the identities' default validity; they are
	// renewed when at most two thirds of it have passed.
	identityValidity = 24 * time.Hour
	identityCA       = "identity-ca" // the CA Secret, and the files' prefix
)

func TestMain(m *testing.M) { proctest.Main(m) }

// keyctlIdentity is one `keyctl identity NAME --ca P --valid D --out P`
// command line of the job.
type keyctlIdentity struct {
	container      string
	name, ca, out  string
	valid          time.Duration
	args           []string
	mountsAPIToken bool
}

// identityCommands returns the job's keyctl identity command lines; a
// container whose args are not one is reported.
func identityCommands(pod *corev1.PodSpec, p *problems) []keyctlIdentity {
	var out []keyctlIdentity
	for _, ct := range pod.InitContainers {
		args := append(append([]string{}, ct.Command...), ct.Args...)
		if len(args) < 2 || args[0] != "identity" {
			p.add("identity job: init container %s: args %q: want keyctl identity NAME ...", ct.Name, args)
			continue
		}
		id := parseIdentityArgs("identity job: "+ct.Name, args, p)
		id.container = ct.Name
		id.mountsAPIToken = mountsToken(pod, &ct)
		out = append(out, id)
	}
	return out
}

// mountsSecretKey reports whether the container can read key of Secret
// secret.
func mountsSecretKey(pod *corev1.PodSpec, ct *corev1.Container, secret, key string) bool {
	for _, m := range ct.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != secret {
				continue
			}
			if len(v.Secret.Items) == 0 || slices.ContainsFunc(v.Secret.Items, func(i corev1.KeyToPath) bool { return i.Key == key }) {
				return true
			}
		}
	}
	return false
}

// mountsToken reports whether the container gets a service account
// token.
func mountsToken(pod *corev1.PodSpec, ct *corev1.Container) bool {
	if ptrOr(pod.AutomountServiceAccountToken, true) {
		return true
	}
	for _, m := range ct.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool { return s.ServiceAccountToken != nil }) {
				return true
			}
		}
	}
	return false
}

// parseIdentityArgs reads a keyctl command line, starting at
// "identity".
func parseIdentityArgs(where string, args []string, p *problems) keyctlIdentity {
	id := keyctlIdentity{args: args}
	values := map[string]string{}
	rest := args[1:]
	for len(rest) > 0 {
		a := rest[0]
		rest = rest[1:]
		if !strings.HasPrefix(a, "-") {
			id.name = a
			continue
		}
		if len(rest) == 0 {
			p.add("%s: flag %s without a value", where, a)
			break
		}
		values[strings.TrimLeft(a, "-")], rest = rest[0], rest[1:]
	}
	id.ca, id.out = values["ca"], values["out"]
	var err error
	if id.valid, err = time.ParseDuration(values["valid"]); err != nil {
		p.add("%s: --valid %q: %v", where, values["valid"], err)
	}
	return id
}

// checkIdentityJob checks the CronJob that renews the identities.
func checkIdentityJob(c *cluster, p *problems) {
	cj := c.cronJobs[identityJob]
	if cj == nil {
		p.add("identity job: no CronJob %s", identityJob)
		return
	}
	checkSchedule(cj, p)
	pod := &cj.Spec.JobTemplate.Spec.Template.Spec

	// The issuing containers: keyctl identity at the default validity,
	// the CA from the CA Secret, the files into the shared work volume.
	ids := identityCommands(pod, p)
	outputs := map[string]bool{}
	for _, id := range ids {
		if id.valid != identityValidity {
			p.add("identity job: %s: --valid %v, want %v", id.container, id.valid, identityValidity)
		}
		if path.Base(id.ca) != identityCA {
			p.add("identity job: %s: --ca %q: want the prefix %s of the Secret's keys", id.container, id.ca, identityCA)
		}
		ct := initContainer(pod, id.container)
		if v := mountAt(pod, ct, path.Dir(id.ca)); v == nil || v.Secret == nil || v.Secret.SecretName != identityCA {
			p.add("identity job: %s: --ca %s is not in the mounted Secret %s", id.container, id.ca, identityCA)
		}
		if id.mountsAPIToken {
			p.add("identity job: %s holds the CA key and an API token: keep them in separate containers", id.container)
		}
		outputs[id.out+".pem"], outputs[id.out+".key"] = true, true
	}

	// The apply container: kubectl apply -k of the generator, and no CA key.
	var apply *corev1.Container
	for i := range pod.Containers {
		ct := &pod.Containers[i]
		if mountsSecretKey(pod, ct, identityCA, identityCA+".key") {
			p.add("identity job: container %s can read the CA key: only the issuing init containers may", ct.Name)
		}
		if slices.Contains(ct.Args, "apply") {
			apply = ct
		}
	}
	if apply == nil {
		p.add("identity job: no container runs kubectl apply")
		return
	}
	args := apply.Args
	k := slices.Index(args, "-k")
	if !slices.Contains(args, "--server-side") || k < 0 || k+1 >= len(args) {
		p.add("identity job: apply args %q: want apply --server-side -k DIR (client-side apply copies the keys into an annotation)", args)
		return
	}
	if !mountsToken(pod, apply) {
		p.add("identity job: the apply container has no service account token")
	}
	dir := args[k+1]
	doc, ok := subPathFile(c, pod, apply, path.Join(dir, "kustomization.yaml"))
	if !ok {
		p.add("identity job: no kustomization.yaml mounted at %s", dir)
		return
	}
	gen, err := parseGenerator(doc)
	if err != nil {
		p.add("identity job: %v", err)
		return
	}
	for secret, files := range gen {
		for _, f := range files {
			if file := path.Join(dir, f.path); !outputs[file] && !mountsItem(pod, apply, file) {
				p.add("identity job: Secret %s key %s: %s is neither written by keyctl identity nor mounted", secret, f.key, path.Join(dir, f.path))
			}
		}
	}

	// RBAC: the pod's service account may write exactly those Secrets.
	checkIdentityRBAC(c, pod.ServiceAccountName, keys(gen), p)

	// The edge identity is one the key servers authorize, and only the
	// job mounts the CA.
	for name, d := range c.deployments {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == identityCA {
				p.add("Deployment %s mounts the identity CA Secret: only the renewal job may", name)
			}
		}
	}
	if cm := c.configMaps[keyserverConfig]; cm != nil {
		var ks struct {
			Authorize []struct {
				Clients []string `yaml:"clients"`
			} `yaml:"authorize"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["keyserver.yaml"]), &ks); err == nil {
			var clients []string
			for _, r := range ks.Authorize {
				clients = append(clients, r.Clients...)
			}
			for _, id := range ids {
				if strings.HasPrefix(id.out, path.Join(dir, "edge")) && !slices.Contains(clients, "dns:"+id.name) {
					p.add("identity job: the edge identity %q is in no key server authorize rule (clients %v)", id.name, clients)
				}
			}
		}
	}
}

// checkSchedule checks that the job replaces an identity before two
// thirds of its validity have passed, parsing the schedule with the
// library the CronJob controller uses.
func checkSchedule(cj *batchv1.CronJob, p *problems) {
	if cj.Spec.TimeZone == nil {
		p.add("identity job: no timeZone: the schedule would follow the controller's local time")
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		p.add("identity job: concurrencyPolicy %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	sched, err := cron.ParseStandard(cj.Spec.Schedule)
	if err != nil {
		p.add("identity job: schedule %q: %v", cj.Spec.Schedule, err)
		return
	}
	limit := identityValidity * 2 / 3
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for prev, end := sched.Next(t), t.Add(14*24*time.Hour); prev.Before(end); {
		next := sched.Next(prev)
		if gap := next.Sub(prev); gap > limit {
			p.add("identity job: schedule %q leaves %v between runs, more than two thirds (%v) of the %v validity", cj.Spec.Schedule, gap, limit, identityValidity)
			return
		}
		prev = next
	}
}

// checkIdentityRBAC checks that account is bound to Roles granting get,
// create and patch on exactly the named Secrets, and nothing else.
func checkIdentityRBAC(c *cluster, account string, secrets []string, p *problems) {
	if c.accounts[namespace+"/"+account] == nil {
		p.add("identity job: no ServiceAccount %s", account)
		return
	}
	bound := false
	for name, b := range c.bindings {
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Kind == "ServiceAccount" && s.Name == account }) {
			continue
		}
		role := c.roles[namespace+"/"+b.RoleRef.Name]
		if b.RoleRef.Kind != "Role" || role == nil {
			p.add("identity job: RoleBinding %s: binds %s %s, not a Role of the manifests", name, b.RoleRef.Kind, b.RoleRef.Name)
			continue
		}
		bound = true
		for _, r := range role.Rules {
			names := slices.Sorted(slices.Values(r.ResourceNames))
			verbs := slices.Sorted(slices.Values(r.Verbs))
			if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Resources, []string{"secrets"}) ||
				!slices.Equal(names, secrets) || !slices.Equal(verbs, []string{"create", "get", "patch"}) {
				p.add("identity job: Role %s rule %v %v %v %v: want get, create, patch on exactly the Secrets %v", role.Name, r.APIGroups, r.Resources, r.ResourceNames, r.Verbs, secrets)
			}
		}
	}
	if !bound {
		p.add("identity job: ServiceAccount %s is bound to no Role", account)
	}
}

func initContainer(pod *corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == name {
			return &pod.InitContainers[i]
		}
	}
	return &corev1.Container{}
}

// subPathFile returns the content of a ConfigMap key mounted with
// subPath exactly at file.
func subPathFile(c *cluster, pod *corev1.PodSpec, ct *corev1.Container, file string) (string, bool) {
	for _, m := range ct.VolumeMounts {
		if path.Clean(m.MountPath) != file || m.SubPath == "" {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				if cm := c.configMaps[namespace+"/"+v.ConfigMap.Name]; cm != nil {
					s, ok := cm.Data[m.SubPath]
					return s, ok
				}
			}
		}
	}
	return "", false
}

// mountsItem reports whether file is an item of a Secret volume mounted
// in the container (a volume with items, which mountAt does not follow).
func mountsItem(pod *corev1.PodSpec, ct *corev1.Container, file string) bool {
	for _, m := range ct.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if path.Join(m.MountPath, it.Path) == file {
					return true
				}
			}
		}
	}
	return false
}

// TestIdentityJobChecksCatch breaks the identity job one way at a time.
func TestIdentityJobChecksCatch(t *testing.T) {
	f := readFacts(t)
	files := productionFiles(t)
	job := func(c *cluster) *corev1.PodSpec { return &c.cronJobs[identityJob].Spec.JobTemplate.Spec.Template.Spec }
	cases := []struct {
		name   string
		break_ func(*cluster)
		want   string
	}{
		{"daily", func(c *cluster) { c.cronJobs[identityJob].Spec.Schedule = "0 3 * * *" }, "two thirds"},
		{"validity", func(c *cluster) { job(c).InitContainers[0].Args[5] = "720h" }, "--valid 720h0m0s"},
		{"token everywhere", func(c *cluster) { job(c).AutomountServiceAccountToken = ptr(true) }, "CA key and an API token"},
		{"CA key in apply", func(c *cluster) {
			for i := range job(c).Volumes {
				if job(c).Volumes[i].Name == "identity-ca-cert" {
					job(c).Volumes[i].Secret.Items = nil
				}
			}
		}, "can read the CA key"},
		{"client-side apply", func(c *cluster) {
			ct := &job(c).Containers[0]
			ct.Args = slices.DeleteFunc(ct.Args, func(a string) bool { return a == "--server-side" })
		}, "--server-side"},
		{"rbac wide", func(c *cluster) { c.roles[namespace+"/keyedge-identity"].Rules[0].ResourceNames = nil }, "exactly the Secrets"},
		{"rbac verbs", func(c *cluster) {
			c.roles[namespace+"/keyedge-identity"].Rules[0].Verbs = []string{"get", "list", "create", "patch"}
		}, "exactly the Secrets"},
		{"edge name", func(c *cluster) { job(c).InitContainers[0].Args[1] = "edge-ams1" }, "no key server authorize rule"},
		{"edge reads what the job does not write", func(c *cluster) {
			replaceIn(t, c.configMaps[edgeConfigMap].Data, "edge.yaml", "/etc/keyedge/identity/edge.pem", "/etc/keyedge/identity/edge-identity.pem")
		}, "keyless.cert_file"},
		{"generated file missing", func(c *cluster) {
			replaceIn(t, c.configMaps[namespace+"/keyedge-identity-kustomization"].Data, "kustomization.yaml", "- server.key", "- keyserver.key")
			if err := c.addGenerated(); err != nil {
				t.Fatal(err)
			}
		}, "neither written"},
		{"CA in a Deployment", func(c *cluster) {
			pod := &c.deployments[keyserverName].Spec.Template.Spec
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == "identity" {
					pod.Volumes[i].Secret.SecretName = identityCA
				}
			}
		}, "only the renewal job"},
		{"job not restricted", func(c *cluster) { job(c).Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil }, "CronJob keyedge/keyedge-identity container apply: readOnlyRootFilesystem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCaught(t, f, files, tc.break_, tc.want) })
	}
}

// TestIdentityJobIssues runs the job's keyctl command lines with the
// real keyctl (paths moved to a temporary directory) against an existing
// CA, and checks what the edges and key servers will load: a chain from
// that CA, for the name given, valid for identityValidity from now, a
// key file only its owner can read; and the CA files left as they were.
func TestIdentityJobIssues(t *testing.T) {
	keyctl := proctest.Build(t, "cmd/keyctl")[0]
	dir := t.TempDir()
	caPrefix := filepath.Join(dir, "ca", identityCA)
	if err := os.Mkdir(filepath.Dir(caPrefix), 0o700); err != nil {
		t.Fatal(err)
	}
	// keyctl identity creates the CA the first time, as an operator does.
	run(t, dir, keyctl, "identity", "bootstrap", "--ca", caPrefix, "--out", filepath.Join(dir, "bootstrap"))
	caBefore := readFile(t, caPrefix+".pem") + readFile(t, caPrefix+".key")
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(readFile(t, caPrefix+".pem"))) {
		t.Fatal("no CA certificate")
	}

	c := loadCluster(t, productionFiles(t))
	var p problems
	ids := identityCommands(&c.cronJobs[identityJob].Spec.JobTemplate.Spec.Template.Spec, &p)
	if len(p) > 0 || len(ids) == 0 {
		t.Fatalf("job's keyctl commands: %v (%d)", p, len(ids))
	}
	unit := identityUnitCommand(t)
	unit.container = "systemd"
	ids = append(ids, unit)
	for _, id := range ids {
		t.Run(id.container, func(t *testing.T) {
			out := filepath.Join(dir, "work", path.Base(id.out))
			os.MkdirAll(filepath.Dir(out), 0o700)
			args := slices.Clone(id.args)
			args[slices.Index(args, id.ca)] = caPrefix
			args[slices.Index(args, id.out)] = out
			start := time.Now()
			run(t, dir, keyctl, args...)
			block, _ := pem.Decode([]byte(readFile(t, out+".pem")))
			if block == nil {
				t.Fatalf("%s.pem: no PEM", out)
			}
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: id.name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("%s: %v", id.name, err)
			}
			if left := leaf.NotAfter.Sub(start); left < identityValidity-time.Minute || left > identityValidity+time.Minute {
				t.Errorf("%s: valid for %v from now, want %v", id.name, left, identityValidity)
			}
			if fi, err := os.Stat(out + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s.key: %v, %v: want mode 0600", out, fi.Mode(), err)
			}
		})
	}
	if readFile(t, caPrefix+".pem")+readFile(t, caPrefix+".key") != caBefore {
		t.Error("keyctl identity rewrote the CA files")
	}
}

// run runs a command in dir, failing the test with its output.
func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}
