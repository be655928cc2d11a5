package deploy

// What a reviewer checks in the Kubernetes manifests, and a test per check
// that breaks a manifest on purpose.

import (
	"cmp"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/config"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names the manifests must use: the edge.yaml settings name these files
// and the README names these objects.
const (
	namespace       = "keyedge"
	edgeName        = namespace + "/keyedge"
	edgeConfigMap   = namespace + "/keyedge-config"
	keyserverName   = namespace + "/keyserver"
	keyserverConfig = namespace + "/keyserver-config"
	placeholderMark = "REPLACE-ME"
	// defaultDrain is edge.yaml's default limits.drain_timeout.
	defaultDrain = 30 * time.Second
)

// problems collects what is wrong, so one run reports everything.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// wantProblem fails the test unless one of got contains want: a check
// given an artefact broken on purpose must say so.
func wantProblem(t *testing.T, got problems, want string) {
	t.Helper()
	for _, p := range got {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Errorf("broken artefact passed: want a problem containing %q, got %q", want, got)
}

// facts are what the manifests are checked against, read from the code.
type facts struct {
	serveFlags     *flagSpec       // keyedge serve
	keyserverFlags *flagSpec       // keyserver
	keyserverKeys  map[string]bool // keyserver.yaml top-level keys
	ruleKeys       map[string]bool // keys of one authorize rule
	keyserverStop  time.Duration   // keyserver's graceful shutdown
}

func readFacts(t *testing.T) *facts {
	t.Helper()
	return &facts{
		serveFlags:     flagSet(t, "keyedge", "keyedge serve"),
		keyserverFlags: flagSet(t, "keyserver", "keyserver"),
		keyserverKeys:  yamlKeys[config.KeyServer](),
		ruleKeys:       yamlKeys[config.Rule](),
		keyserverStop:  time.Duration(constSeconds(t, "keyserver", "shutdownTimeout")) * time.Second,
	}
}

func TestManifests(t *testing.T) {
	f := readFacts(t)
	prod := loadCluster(t, productionFiles(t))
	for _, p := range checkCluster(t, prod, f) {
		t.Error(p)
	}
	for _, p := range checkFleet(t, prod, f) {
		t.Error(p)
	}
	// dev/ too, with the production manifests it depends on.
	all := loadCluster(t, manifestFiles(t))
	for _, p := range checkCluster(t, all, f) {
		if !strings.HasPrefix(p, "fleet:") {
			t.Error("with dev/: " + p)
		}
	}
}

// checkCluster checks every object for what any workload here must have.
func checkCluster(t *testing.T, c *cluster, f *facts) problems {
	var p problems
	if len(c.namespaces) != 1 || c.namespaces[namespace] == nil {
		p.add("want exactly the Namespace %q, have %d namespaces", namespace, len(c.namespaces))
	} else if c.namespaces[namespace].Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		p.add("Namespace %s: enforce the restricted Pod Security Standard", namespace)
	}
	for id := range c.source {
		if !strings.Contains(id, " "+namespace+"/") && !strings.HasPrefix(id, "Namespace ") {
			p.add("%s (%s): not in namespace %s", id, c.source[id], namespace)
		}
	}
	for name, d := range c.deployments {
		checkDeployment(c, name, d, &p)
	}
	for name, cj := range c.cronJobs {
		checkPod(c, "CronJob "+name, &cj.Spec.JobTemplate.Spec.Template.Spec, false, &p)
	}
	for name, s := range c.services {
		d := c.selected(s.Spec.Selector)
		if d == nil {
			p.add("Service %s: selector %v matches no single Deployment's pods", name, s.Spec.Selector)
			continue
		}
		for _, sp := range s.Spec.Ports {
			if sp.TargetPort.IntVal == 0 && sp.TargetPort.StrVal == "" {
				p.add("Service %s port %d: set targetPort to a container port", name, sp.Port)
			} else if _, ok := podPort(&d.Spec.Template.Spec, sp.TargetPort, sp.Protocol); !ok {
				p.add("Service %s port %d: targetPort %s is no container port of Deployment %s", name, sp.Port, sp.TargetPort.String(), d.Name)
			}
		}
	}
	for name, pdb := range c.pdbs {
		sel := map[string]string(nil)
		if pdb.Spec.Selector != nil {
			sel = pdb.Spec.Selector.MatchLabels
		}
		d := c.selected(sel)
		if d == nil {
			p.add("PodDisruptionBudget %s: selector matches no single Deployment's pods", name)
			continue
		}
		replicas := int(ptrOr(d.Spec.Replicas, 1))
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			if n := pdb.Spec.MaxUnavailable.IntValue(); pdb.Spec.MaxUnavailable.Type != intstr.Int || n < 1 || n >= replicas {
				p.add("PodDisruptionBudget %s: maxUnavailable %s of %d replicas: want a number from 1 to replicas-1", name, pdb.Spec.MaxUnavailable.String(), replicas)
			}
		case pdb.Spec.MinAvailable != nil:
			if n := pdb.Spec.MinAvailable.IntValue(); pdb.Spec.MinAvailable.Type != intstr.Int || n < 1 || n >= replicas {
				p.add("PodDisruptionBudget %s: minAvailable %s of %d replicas blocks drains or protects nothing", name, pdb.Spec.MinAvailable.String(), replicas)
			}
		default:
			p.add("PodDisruptionBudget %s: set maxUnavailable or minAvailable", name)
		}
	}
	for name, s := range c.secrets {
		for k, v := range secretData(s) {
			if !strings.Contains(v, placeholderMark) || strings.Contains(v, "-----BEGIN") || strings.Contains(v, "PRIVATE KEY") {
				p.add("Secret %s key %s: must hold a %s placeholder, never real material", name, k, placeholderMark)
			}
		}
	}
	return p
}

// checkDeployment checks one Deployment's pod template.
func checkDeployment(c *cluster, name string, d *appsv1.Deployment, p *problems) {
	pod := &d.Spec.Template.Spec
	if d.Spec.Selector == nil || !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) || len(d.Spec.Selector.MatchLabels) == 0 {
		p.add("Deployment %s: selector does not match the pod template's labels", name)
	}
	checkPod(c, "Deployment "+name, pod, true, p)
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] == "true" {
		n, err := strconv.Atoi(a["prometheus.io/port"])
		if _, ok := podPort(pod, intstr.FromString("metrics"), corev1.ProtocolTCP); err != nil || !ok || !podHasPort(pod, n) {
			p.add("Deployment %s: prometheus.io/port %q is not the pod's metrics port", name, a["prometheus.io/port"])
		}
	}
}

// checkPod checks what every pod here must have: the restricted Pod
// Security Standard, resources, volumes and mounts that exist, and, for
// long-running pods (probes), liveness and readiness probes.
func checkPod(c *cluster, name string, pod *corev1.PodSpec, probes bool, p *problems) {
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p.add("%s: pod seccompProfile must be RuntimeDefault", name)
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		p.add("%s: runAsUser 0", name)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil && c.configMaps[namespace+"/"+v.ConfigMap.Name] == nil:
			p.add("%s volume %s: no ConfigMap %s in the manifests", name, v.Name, v.ConfigMap.Name)
		case v.Secret != nil && c.secrets[namespace+"/"+v.Secret.SecretName] == nil:
			p.add("%s volume %s: no Secret %s in the manifests", name, v.Name, v.Secret.SecretName)
		case v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0):
			// The kubelet adds group read for fsGroup; others must get nothing.
			p.add("%s volume %s: Secret defaultMode must be 0400 (the default 0644 lets every user read it)", name, v.Name)
		}
	}
	if len(pod.Containers) == 0 {
		p.add("%s: no containers", name)
	}
	for _, ct := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		where := fmt.Sprintf("%s container %s", name, ct.Name)
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := ct.Resources.Requests[res]
			lim, hasLim := ct.Resources.Limits[res]
			if !hasReq || !hasLim {
				p.add("%s: set both requests and limits for %s", where, res)
			} else if req.Cmp(lim) > 0 {
				p.add("%s: %s request %s above its limit %s", where, res, req.String(), lim.String())
			}
		}
		sc := ct.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if !ptrOr(sc.RunAsNonRoot, ptrOr(psc.RunAsNonRoot, false)) {
			p.add("%s: runAsNonRoot must be true", where)
		}
		if !ptrOr(sc.ReadOnlyRootFilesystem, false) {
			p.add("%s: readOnlyRootFilesystem must be true", where)
		}
		if ptrOr(sc.AllowPrivilegeEscalation, true) {
			p.add("%s: allowPrivilegeEscalation must be false", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			p.add("%s: privileged", where)
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
			p.add("%s: capabilities must drop ALL and add none", where)
		}
		if ct.Image == "" {
			p.add("%s: no image", where)
		}
		for _, probe := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"livenessProbe", ct.LivenessProbe}, {"readinessProbe", ct.ReadinessProbe}, {"startupProbe", ct.StartupProbe}} {
			if probe.probe == nil {
				if probes && probe.kind != "startupProbe" {
					p.add("%s: no %s", where, probe.kind)
				}
				continue
			}
			var port intstr.IntOrString
			switch h := probe.probe.ProbeHandler; {
			case h.HTTPGet != nil:
				port = h.HTTPGet.Port
			case h.TCPSocket != nil:
				port = h.TCPSocket.Port
			case h.GRPC != nil:
				port = intstr.FromInt32(h.GRPC.Port)
			default:
				p.add("%s: %s runs a command; the images have no shell", where, probe.kind)
				continue
			}
			if _, ok := containerPort(&ct, port, corev1.ProtocolTCP); !ok {
				p.add("%s: %s port %s is not a port of the container", where, probe.kind, port.String())
			}
		}
		for _, m := range ct.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				p.add("%s: mount %s names no volume", where, m.Name)
			}
		}
		for _, e := range ct.Env {
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
				s := c.secrets[namespace+"/"+ref.SecretKeyRef.Name]
				if _, ok := secretData(s)[ref.SecretKeyRef.Key]; s == nil || !ok {
					p.add("%s: env %s: no key %s in Secret %s", where, e.Name, ref.SecretKeyRef.Key, ref.SecretKeyRef.Name)
				}
			}
		}
	}
}

// checkFleet checks the edge and the key server against their configs.
func checkFleet(t *testing.T, c *cluster, f *facts) problems {
	var p problems
	checkEdge(t, c, f, &p)
	checkKeyserver(t, c, f, &p)
	checkIdentityJob(c, &p)
	return p
}

func checkEdge(t *testing.T, c *cluster, f *facts, p *problems) {
	d := c.deployments[edgeName]
	if d == nil {
		p.add("fleet: no Deployment %s", edgeName)
		return
	}
	pod := &d.Spec.Template.Spec
	ct := container(pod, "keyedge")
	if ct == nil {
		p.add("fleet: Deployment %s has no container keyedge", edgeName)
		return
	}
	if r := ptrOr(d.Spec.Replicas, 1); r < 2 {
		p.add("edge: replicas %d: run at least 2", r)
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.String() != "0" && s.RollingUpdate.MaxUnavailable.String() != "0%" {
		p.add("edge: rolling update with maxUnavailable 0 wanted")
	}

	// The command line: keyedge serve with flags it has, and the config
	// file from the mounted ConfigMap.
	args := append(append([]string{}, ct.Command...), ct.Args...)
	if len(args) == 0 || args[0] != "serve" {
		p.add("edge: args %q: want serve and its flags (the image's ENTRYPOINT is the binary)", args)
		return
	}
	values, rest, err := f.serveFlags.parseArgs(args[1:])
	if err != nil || len(rest) > 0 {
		p.add("edge: args %q: %v (left over %q)", args, err, rest)
		return
	}
	doc, ok := mountedFile(c, pod, ct, values["config"], p, "edge --config")
	if !ok {
		return
	}
	cfg, raw, err := loadEdgeConfig(t, doc)
	if err != nil {
		p.add("edge: the ConfigMap's edge.yaml does not load: %v", err)
		return
	}

	// Ports: the metrics listener the probes use, the TLS and HTTP
	// listeners the Service sends 443 and 80 to.
	if cfg.MetricsListen != ":9090" {
		p.add("edge: metrics_listen %q: want \":9090\" (every address of the pod, where the kubelet and Prometheus reach it)", cfg.MetricsListen)
	}
	metrics := listenPort(cfg.MetricsListen, 9090)
	checkProbe(p, "edge", ct, ct.LivenessProbe, "liveness", "/healthz", metrics)
	checkProbe(p, "edge", ct, ct.ReadinessProbe, "readiness", "/readyz", metrics)
	if ct.StartupProbe != nil {
		checkProbe(p, "edge", ct, ct.StartupProbe, "startup", "/healthz", metrics)
	}
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(metrics) || a["prometheus.io/path"] != "/metrics" {
		p.add("edge: prometheus.io annotations %v: want scrape true, port %d, path /metrics", a, metrics)
	}
	svc := c.services[edgeName]
	if svc == nil {
		p.add("edge: no Service %s", edgeName)
	} else {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			p.add("edge: Service type %q, want LoadBalancer", svc.Spec.Type)
		}
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			p.add("edge: Service externalTrafficPolicy %q, want Local (client addresses, per-node health checks)", svc.Spec.ExternalTrafficPolicy)
		}
		type target struct {
			port   int32
			proto  corev1.Protocol
			listen int
		}
		want := []target{{443, corev1.ProtocolTCP, listenPort(cfg.Listen, 443)}}
		if cfg.HTTP3On() { // HTTP/3: QUIC on UDP, the same port number unless http3.listen says otherwise
			want = append(want, target{443, corev1.ProtocolUDP, listenPort(cmp.Or(cfg.HTTP3.Listen, cfg.Listen), 443)})
		}
		if cfg.ACME.CA != "" {
			want = append(want, target{80, corev1.ProtocolTCP, listenPort(cfg.ACME.HTTPListen, 80)})
		} else {
			p.add("edge: acme is off, so nothing listens behind the Service's port 80")
		}
		for _, w := range want {
			sp := servicePort(svc, w.port, w.proto)
			if sp == nil {
				p.add("edge: Service has no %s port %d", w.proto, w.port)
				continue
			}
			if n, ok := containerPort(ct, sp.TargetPort, w.proto); !ok || int(n) != w.listen {
				p.add("edge: Service %s port %d targetPort %s is %s container port %d, but edge.yaml listens on %d there", w.proto, w.port, sp.TargetPort.String(), w.proto, n, w.listen)
			}
			if w.listen < 1024 {
				p.add("edge: edge.yaml listens on %d, a privileged port the container cannot bind without NET_BIND_SERVICE", w.listen)
			}
		}
	}

	// Shutdown: the preStop sleep, then the drain, within the grace period.
	drain := cfg.Limits.DrainTimeout
	if drain == 0 {
		drain = defaultDrain
	}
	preStop := time.Duration(0)
	if ct.Lifecycle == nil || ct.Lifecycle.PreStop == nil {
		p.add("edge: no preStop: the pod would stop before load balancers see it leave")
	} else if s := ct.Lifecycle.PreStop.Sleep; s == nil || s.Seconds < 5 {
		p.add("edge: preStop: want a sleep of at least 5s (the image has no shell for an exec hook)")
	} else {
		preStop = time.Duration(s.Seconds) * time.Second
	}
	if grace := time.Duration(ptrOr(pod.TerminationGracePeriodSeconds, 30)) * time.Second; grace <= preStop+drain {
		p.add("edge: terminationGracePeriodSeconds %v must exceed preStop %v + limits.drain_timeout %v", grace, preStop, drain)
	}

	// Every file edge.yaml names is a key of a mounted Secret or ConfigMap.
	for setting, file := range fileSettings(raw) {
		mountedFile(c, pod, ct, file, p, "edge.yaml "+setting)
	}
	// Shared state: a fleet cannot share a pod's local disk.
	ks, _ := raw["keystore"].(string)
	if !strings.HasPrefix(ks, "redis://") && !strings.HasPrefix(ks, "rediss://") {
		p.add("edge: keystore %q: pods need the shared Redis backend, not a local path", ks)
	} else if _, ok := raw["keystore_password_file"]; !ok {
		p.add("edge: keystore %q without keystore_password_file", ks)
	}
	if st, _ := raw["session_tickets"].(map[string]any); st["secret_file"] == nil {
		p.add("edge: session_tickets.secret_file unset: pods would not resume each other's sessions")
	}

	// Memory: the cache fits under the limit, GOMEMLIMIT below it.
	if lim, ok := ct.Resources.Limits[corev1.ResourceMemory]; ok {
		if max := cfg.Cache.MaxBytes; max == 0 || lim.Value() < 2*max {
			p.add("edge: memory limit %s leaves too little room over cache.max_bytes %d (want at least twice)", lim.String(), max)
		}
		for _, e := range ct.Env {
			if e.Name == "GOMEMLIMIT" {
				if v, err := parseGoMemLimit(e.Value); err != nil || v >= lim.Value() {
					p.add("edge: GOMEMLIMIT %q must be below the memory limit %s (%v)", e.Value, lim.String(), err)
				}
			}
		}
	}
}

func checkKeyserver(t *testing.T, c *cluster, f *facts, p *problems) {
	d := c.deployments[keyserverName]
	if d == nil {
		p.add("fleet: no Deployment %s", keyserverName)
		return
	}
	pod := &d.Spec.Template.Spec
	ct := container(pod, "keyserver")
	if ct == nil {
		p.add("fleet: Deployment %s has no container keyserver", keyserverName)
		return
	}
	args := append(append([]string{}, ct.Command...), ct.Args...)
	values, rest, err := f.keyserverFlags.parseArgs(args)
	if err != nil || len(rest) > 0 {
		p.add("keyserver: args %q: %v (left over %q)", args, err, rest)
		return
	}
	doc, ok := mountedFile(c, pod, ct, values["config"], p, "keyserver --config")
	if !ok {
		return
	}
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(doc), &raw); err != nil {
		p.add("keyserver: keyserver.yaml: %v", err)
		return
	}
	if err := loadKeyServerConfig(t, doc); err != nil {
		p.add("keyserver: the ConfigMap's keyserver.yaml does not load: %v", err)
	}
	for k := range raw {
		if !f.keyserverKeys[k] {
			p.add("keyserver: keyserver.yaml: unknown key %q (cmd/keyserver refuses it)", k)
		}
	}
	rules, _ := raw["authorize"].([]any)
	for i, r := range rules {
		m, _ := r.(map[string]any)
		for k := range m {
			if !f.ruleKeys[k] {
				p.add("keyserver: keyserver.yaml authorize[%d]: unknown key %q", i, k)
			}
		}
	}
	for _, k := range []string{"cert_file", "key_file", "client_ca_file"} {
		if s, _ := raw[k].(string); s == "" {
			p.add("keyserver: keyserver.yaml: %s is required", k)
		}
	}
	dir, _ := raw["keys_dir"].(string)
	if _, hasKS := raw["keystore"]; (dir == "") == !hasKS {
		p.add("keyserver: keyserver.yaml: set exactly one of keys_dir and keystore")
	}
	for setting, file := range fileSettings(raw) {
		mountedFile(c, pod, ct, file, p, "keyserver.yaml "+setting)
	}
	if dir != "" {
		if v := mountAt(pod, ct, dir); v == nil || v.Secret == nil {
			p.add("keyserver: keys_dir %s is not a mounted Secret", dir)
		}
	}
	ml, _ := raw["metrics_listen"].(string)
	if ml == "" || ml == "off" || !strings.HasPrefix(ml, ":") {
		p.add("keyserver: metrics_listen %q: want \":port\" for the probes", ml)
	}
	metrics := listenPort(ml, 0)
	checkProbe(p, "keyserver", ct, ct.LivenessProbe, "liveness", "/healthz", metrics)
	checkProbe(p, "keyserver", ct, ct.ReadinessProbe, "readiness", "/readyz", metrics)
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(metrics) {
		p.add("keyserver: prometheus.io annotations %v: want scrape true, port %d", a, metrics)
	}
	ls, _ := raw["listen"].(string)
	listen := listenPort(ls, 2407)
	if svc := c.services[keyserverName]; svc == nil {
		p.add("keyserver: no Service %s", keyserverName)
	} else if len(svc.Spec.Ports) != 1 {
		p.add("keyserver: Service: want one port, the keyless listener")
	} else if n, ok := containerPort(ct, svc.Spec.Ports[0].TargetPort, svc.Spec.Ports[0].Protocol); !ok || int(n) != listen {
		p.add("keyserver: Service targetPort %s is container port %d, but keyserver.yaml listens on %d", svc.Spec.Ports[0].TargetPort.String(), n, listen)
	}
	preStop := time.Duration(0)
	if ct.Lifecycle != nil && ct.Lifecycle.PreStop != nil && ct.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(ct.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if grace := time.Duration(ptrOr(pod.TerminationGracePeriodSeconds, 30)) * time.Second; grace <= preStop+f.keyserverStop {
		p.add("keyserver: terminationGracePeriodSeconds %v must exceed preStop %v + its %v shutdown", grace, preStop, f.keyserverStop)
	}
}

// checkProbe checks that a probe is an HTTP GET of path on the container
// port numbered port.
func checkProbe(p *problems, who string, ct *corev1.Container, probe *corev1.Probe, kind, path string, port int) {
	if probe == nil || probe.HTTPGet == nil {
		p.add("%s: %s probe: want GET %s on port %d", who, kind, path, port)
		return
	}
	n, ok := containerPort(ct, probe.HTTPGet.Port, corev1.ProtocolTCP)
	if probe.HTTPGet.Path != path || !ok || int(n) != port {
		p.add("%s: %s probe GET %s on port %s (%d): want %s on %d, the metrics listener", who, kind, probe.HTTPGet.Path, probe.HTTPGet.Port.String(), n, path, port)
	}
}

// mountedFile returns the contents of the file at path in the container,
// which must be an absolute path to a key of a mounted Secret or
// ConfigMap.
func mountedFile(c *cluster, pod *corev1.PodSpec, ct *corev1.Container, file string, p *problems, what string) (string, bool) {
	if !path.IsAbs(file) {
		p.add("%s: %q: use an absolute path to a mounted file", what, file)
		return "", false
	}
	v := mountAt(pod, ct, path.Dir(file))
	var data map[string]string
	switch {
	case v == nil:
	case v.Secret != nil:
		data = secretData(c.secrets[namespace+"/"+v.Secret.SecretName])
	case v.ConfigMap != nil:
		if cm := c.configMaps[namespace+"/"+v.ConfigMap.Name]; cm != nil {
			data = cm.Data
		}
	}
	content, ok := data[path.Base(file)]
	if !ok {
		p.add("%s: %s is not a key of a Secret or ConfigMap mounted at %s", what, file, path.Dir(file))
	}
	return content, ok
}

// mountAt returns the volume mounted in the container exactly at dir.
func mountAt(pod *corev1.PodSpec, ct *corev1.Container, dir string) *corev1.Volume {
	for _, m := range ct.VolumeMounts {
		if path.Clean(m.MountPath) != path.Clean(dir) || m.SubPath != "" {
			continue
		}
		for i := range pod.Volumes {
			if v := &pod.Volumes[i]; v.Name == m.Name {
				if v.Secret != nil && len(v.Secret.Items) > 0 || v.ConfigMap != nil && len(v.ConfigMap.Items) > 0 {
					return nil // remapped keys: not followed here
				}
				return v
			}
		}
	}
	return nil
}

// selected returns the one Deployment whose pods sel selects.
func (c *cluster) selected(sel map[string]string) *appsv1.Deployment {
	if len(sel) == 0 {
		return nil
	}
	var found *appsv1.Deployment
	for _, d := range c.deployments {
		if labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels)) {
			if found != nil {
				return nil
			}
			found = d
		}
	}
	return found
}

func container(pod *corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	return nil
}

// containerPort resolves a port by name or number among the container's
// declared ports of protocol proto (TCP when empty, as in Kubernetes).
func containerPort(ct *corev1.Container, port intstr.IntOrString, proto corev1.Protocol) (int32, bool) {
	for _, cp := range ct.Ports {
		if protocolOf(cp.Protocol) != protocolOf(proto) {
			continue
		}
		if port.Type == intstr.String && cp.Name == port.StrVal || port.Type == intstr.Int && cp.ContainerPort == port.IntVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func podPort(pod *corev1.PodSpec, port intstr.IntOrString, proto corev1.Protocol) (int32, bool) {
	for i := range pod.Containers {
		if n, ok := containerPort(&pod.Containers[i], port, proto); ok {
			return n, true
		}
	}
	return 0, false
}

func podHasPort(pod *corev1.PodSpec, n int) bool {
	_, ok := podPort(pod, intstr.FromInt(n), corev1.ProtocolTCP)
	return ok
}

func servicePort(s *corev1.Service, port int32, proto corev1.Protocol) *corev1.ServicePort {
	for i := range s.Spec.Ports {
		if s.Spec.Ports[i].Port == port && protocolOf(s.Spec.Ports[i].Protocol) == protocolOf(proto) {
			return &s.Spec.Ports[i]
		}
	}
	return nil
}

// protocolOf is p, or TCP, Kubernetes' default, when p is empty.
func protocolOf(p corev1.Protocol) corev1.Protocol { return cmp.Or(p, corev1.ProtocolTCP) }

// listenPort is the port of a host:port listen address, or def when the
// address is empty.
func listenPort(addr string, def int) int {
	if addr == "" {
		return def
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return -1
	}
	return n
}

// secretData is a Secret's data and stringData as strings.
func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	if s == nil {
		return out
	}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// parseGoMemLimit parses GOMEMLIMIT's syntax: a number of bytes with an
// optional B, KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
