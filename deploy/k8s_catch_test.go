package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestManifestChecksCatch breaks the manifests one way at a time and
// expects the checks above to say so.
func TestManifestChecksCatch(t *testing.T) {
	f := readFacts(t)
	files := productionFiles(t)
	edgeYAML := func(c *cluster, old, new string) {
		replaceIn(t, c.configMaps[edgeConfigMap].Data, "edge.yaml", old, new)
	}
	edgeCt := func(c *cluster) *corev1.Container {
		return container(&c.deployments[edgeName].Spec.Template.Spec, "keyedge")
	}
	cases := []struct {
		name   string
		break_ func(*cluster)
		want   string
	}{
		{"readiness path", func(c *cluster) { edgeCt(c).ReadinessProbe.HTTPGet.Path = "/ready" }, "readiness probe"},
		{"liveness port", func(c *cluster) { edgeCt(c).LivenessProbe.HTTPGet.Port = intstr.FromString("https") }, "liveness probe"},
		{"metrics_listen", func(c *cluster) { edgeYAML(c, `metrics_listen: ":9090"`, `metrics_listen: "127.0.0.1:9090"`) }, "metrics_listen"},
		{"metrics port moved", func(c *cluster) { edgeYAML(c, `metrics_listen: ":9090"`, `metrics_listen: ":9091"`) }, "readiness probe"},
		{"no memory limit", func(c *cluster) { delete(edgeCt(c).Resources.Limits, corev1.ResourceMemory) }, "requests and limits for memory"},
		{"writable root", func(c *cluster) { edgeCt(c).SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem"},
		{"root", func(c *cluster) {
			edgeCt(c).SecurityContext.RunAsNonRoot = nil
			c.deployments[edgeName].Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot"},
		{"capability", func(c *cluster) {
			edgeCt(c).SecurityContext.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
		}, "capabilities"},
		{"grace", func(c *cluster) {
			c.deployments[edgeName].Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(40))
		}, "terminationGracePeriodSeconds"},
		{"drain", func(c *cluster) { edgeYAML(c, "drain_timeout: 30s", "drain_timeout: 50s") }, "terminationGracePeriodSeconds"},
		{"no preStop", func(c *cluster) { edgeCt(c).Lifecycle = nil }, "preStop"},
		{"unknown edge.yaml key", func(c *cluster) { edgeYAML(c, "log_level: info", "log_level: info\nlog_levels: info") }, "does not load"},
		{"bad edge.yaml value", func(c *cluster) { edgeYAML(c, "log_level: info", "log_level: loud") }, "does not load"},
		{"unmounted secret file", func(c *cluster) {
			edgeYAML(c, "/etc/keyedge/secrets/fleet.key", "/etc/keyedge/secrets/fleet.pem")
		}, "fleet_key_file"},
		{"relative file", func(c *cluster) { edgeYAML(c, "/etc/keyedge/secrets/node.key", "node.key") }, "absolute path"},
		{"local keystore", func(c *cluster) { edgeYAML(c, "redis://redis.keyedge.svc:6379/0", "/var/lib/keyedge") }, "shared Redis"},
		{"targetPort", func(c *cluster) { c.services[edgeName].Spec.Ports[0].TargetPort = intstr.FromString("htps") }, "targetPort"},
		{"443 to metrics", func(c *cluster) { c.services[edgeName].Spec.Ports[0].TargetPort = intstr.FromInt(9090) }, "listens on 8443"},
		{"selector", func(c *cluster) {
			c.services[edgeName].Spec.Selector = map[string]string{"app.kubernetes.io/name": "keyedg"}
		}, "selector"},
		{"deployment selector", func(c *cluster) {
			c.deployments[edgeName].Spec.Selector.MatchLabels["tier"] = "edge"
		}, "selector does not match"},
		{"traffic policy", func(c *cluster) {
			c.services[edgeName].Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}, "externalTrafficPolicy"},
		{"one replica", func(c *cluster) { c.deployments[edgeName].Spec.Replicas = ptr(int32(1)) }, "replicas"},
		{"maxUnavailable", func(c *cluster) {
			c.deployments[edgeName].Spec.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromInt(1))
		}, "maxUnavailable 0"},
		{"pdb", func(c *cluster) {
			c.pdbs[edgeName].Spec.MaxUnavailable = ptr(intstr.FromInt(3))
		}, "PodDisruptionBudget"},
		{"secret mode", func(c *cluster) {
			for i := range c.deployments[edgeName].Spec.Template.Spec.Volumes {
				if v := &c.deployments[edgeName].Spec.Template.Spec.Volumes[i]; v.Secret != nil {
					v.Secret.DefaultMode = nil
				}
			}
		}, "defaultMode"},
		{"real key", func(c *cluster) {
			c.secrets[namespace+"/keyedge-secrets"].StringData["fleet.key"] = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n"
		}, "placeholder"},
		{"undefined flag", func(c *cluster) { edgeCt(c).Args = []string{"serve", "--configg", "/etc/keyedge/config/edge.yaml"} }, "not defined"},
		{"no serve", func(c *cluster) { edgeCt(c).Args = []string{"--config", "/etc/keyedge/config/edge.yaml"} }, "want serve"},
		{"prometheus port", func(c *cluster) { c.deployments[edgeName].Spec.Template.Annotations["prometheus.io/port"] = "8443" }, "prometheus.io"},
		{"small memory", func(c *cluster) { edgeCt(c).Resources.Limits[corev1.ResourceMemory] = resource.MustParse("300Mi") }, "cache.max_bytes"},
		{"keyserver key", func(c *cluster) {
			replaceIn(t, c.configMaps[keyserverConfig].Data, "keyserver.yaml", "max_in_flight: 256", "max_inflight: 256")
		}, "unknown key"},
		{"keyserver metrics", func(c *cluster) {
			replaceIn(t, c.configMaps[keyserverConfig].Data, "keyserver.yaml", `metrics_listen: ":9102"`, `metrics_listen: ":9103"`)
		}, "keyserver: liveness probe"},
		{"keyserver listen", func(c *cluster) {
			replaceIn(t, c.configMaps[keyserverConfig].Data, "keyserver.yaml", `listen: ":2407"`, `listen: ":2408"`)
		}, "listens on 2408"},
		{"keyserver keys and keystore", func(c *cluster) {
			replaceIn(t, c.configMaps[keyserverConfig].Data, "keyserver.yaml", "keys_dir:", "keystore: /ks\nkeys_dir:")
		}, "exactly one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantCaught(t, f, files, tc.break_, tc.want) })
	}
}

// wantCaught loads the manifests, breaks them and expects the cluster
// and fleet checks to report a problem containing want.
func wantCaught(t *testing.T, f *facts, files []string, break_ func(*cluster), want string) {
	t.Helper()
	c := loadCluster(t, files)
	break_(c)
	wantProblem(t, append(checkCluster(t, c, f), checkFleet(t, c, f)...), want)
}

// replaceIn replaces old by new once in m[k], failing the test when old
// is not there (so a case never passes by breaking nothing).
func replaceIn(t *testing.T, m map[string]string, k, old, new string) {
	t.Helper()
	if !strings.Contains(m[k], old) {
		t.Fatalf("%q not found in %s: update the test case", old, k)
	}
	m[k] = strings.Replace(m[k], old, new, 1)
}

func ptr[T any](v T) *T { return &v }
