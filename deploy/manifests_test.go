package deploy

// Reading the Kubernetes manifests: every document of every file under
// k8s/ decoded strictly into its API type.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const k8sDir = "k8s"

// cluster is what a set of manifests declares, by "namespace/name".
type cluster struct {
	namespaces  map[string]*corev1.Namespace
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	cronJobs    map[string]*batchv1.CronJob
	accounts    map[string]*corev1.ServiceAccount
	roles       map[string]*rbacv1.Role
	bindings    map[string]*rbacv1.RoleBinding
	source      map[string]string // "Kind namespace/name" -> file, for messages
}

func newCluster() *cluster {
	return &cluster{
		namespaces:  map[string]*corev1.Namespace{},
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		configMaps:  map[string]*corev1.ConfigMap{},
		secrets:     map[string]*corev1.Secret{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
		cronJobs:    map[string]*batchv1.CronJob{},
		accounts:    map[string]*corev1.ServiceAccount{},
		roles:       map[string]*rbacv1.Role{},
		bindings:    map[string]*rbacv1.RoleBinding{},
		source:      map[string]string{},
	}
}

// decodeDocument decodes one YAML document into the API type its
// apiVersion and kind name, strictly: an unknown field, a duplicate field
// or a value of the wrong type is an error. Only the kinds deploy/k8s uses
// are accepted.
func (c *cluster) decodeDocument(file string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var (
		obj  any
		meta *metav1.ObjectMeta
		put  func()
	)
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		o := new(corev1.Namespace)
		obj, meta, put = o, &o.ObjectMeta, func() { c.namespaces[o.Name] = o }
	case "apps/v1 Deployment":
		o := new(appsv1.Deployment)
		obj, meta, put = o, &o.ObjectMeta, func() { c.deployments[key(o.ObjectMeta)] = o }
	case "v1 Service":
		o := new(corev1.Service)
		obj, meta, put = o, &o.ObjectMeta, func() { c.services[key(o.ObjectMeta)] = o }
	case "v1 ConfigMap":
		o := new(corev1.ConfigMap)
		obj, meta, put = o, &o.ObjectMeta, func() { c.configMaps[key(o.ObjectMeta)] = o }
	case "v1 Secret":
		o := new(corev1.Secret)
		obj, meta, put = o, &o.ObjectMeta, func() { c.secrets[key(o.ObjectMeta)] = o }
	case "policy/v1 PodDisruptionBudget":
		o := new(policyv1.PodDisruptionBudget)
		obj, meta, put = o, &o.ObjectMeta, func() { c.pdbs[key(o.ObjectMeta)] = o }
	case "batch/v1 CronJob":
		o := new(batchv1.CronJob)
		obj, meta, put = o, &o.ObjectMeta, func() { c.cronJobs[key(o.ObjectMeta)] = o }
	case "v1 ServiceAccount":
		o := new(corev1.ServiceAccount)
		obj, meta, put = o, &o.ObjectMeta, func() { c.accounts[key(o.ObjectMeta)] = o }
	case "rbac.authorization.k8s.io/v1 Role":
		o := new(rbacv1.Role)
		obj, meta, put = o, &o.ObjectMeta, func() { c.roles[key(o.ObjectMeta)] = o }
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		o := new(rbacv1.RoleBinding)
		obj, meta, put = o, &o.ObjectMeta, func() { c.bindings[key(o.ObjectMeta)] = o }
	default:
		return fmt.Errorf("apiVersion %q kind %q: not a kind these manifests use (add it to decodeDocument)", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if meta.Name == "" {
		return fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	id := tm.Kind + " " + key(*meta)
	if prev, dup := c.source[id]; dup {
		return fmt.Errorf("%s is declared twice (also in %s)", id, prev)
	}
	c.source[id] = file
	put()
	return nil
}

func key(m metav1.ObjectMeta) string { return m.Namespace + "/" + m.Name }

// decodeFile decodes every document of a multi-document YAML file.
func (c *cluster) decodeFile(path string, data []byte) error {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if isEmptyYAML(doc) {
			continue
		}
		if err := c.decodeDocument(path, doc); err != nil {
			return fmt.Errorf("%s: document %d: %w", path, i, err)
		}
	}
}

// isEmptyYAML reports whether a document holds only comments and blanks.
func isEmptyYAML(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

// manifestFiles lists the manifests under k8s/, dev/ included, skipping
// kustomization.yaml (not an API object).
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(k8sDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".yaml") && d.Name() != "kustomization.yaml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests under %s", k8sDir)
	}
	return files
}

// loadCluster decodes the given manifest files.
func loadCluster(t *testing.T, files []string) *cluster {
	t.Helper()
	c := newCluster()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.decodeFile(f, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.addGenerated(); err != nil {
		t.Fatal(err)
	}
	return c
}

// generatorKustomization is the part of a kustomization.yaml held in a
// ConfigMap (the identity job's) that generates Secrets.
type generatorKustomization struct {
	APIVersion       string `json:"apiVersion"`
	Kind             string `json:"kind"`
	Namespace        string `json:"namespace"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
		Labels                map[string]string `json:"labels"`
	} `json:"generatorOptions"`
	SecretGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"secretGenerator"`
}

// generatedFile is one file of a secretGenerator: the Secret's key and
// the file it is read from, relative to the kustomization.
type generatedFile struct{ key, path string }

// parseGenerator reads a kustomization.yaml that generates Secrets: by
// Secret name, the files each is made of.
func parseGenerator(doc string) (map[string][]generatedFile, error) {
	var k generatorKustomization
	if err := yaml.UnmarshalStrict([]byte(doc), &k); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	if k.Kind != "Kustomization" || k.Namespace != namespace || !k.GeneratorOptions.DisableNameSuffixHash {
		return nil, fmt.Errorf("kustomization.yaml: want a Kustomization in namespace %s with disableNameSuffixHash (the pods mount the Secrets by name)", namespace)
	}
	out := map[string][]generatedFile{}
	for _, g := range k.SecretGenerator {
		for _, f := range g.Files {
			key, path, ok := strings.Cut(f, "=")
			if !ok {
				key, path = filepath.Base(f), f
			}
			out[g.Name] = append(out[g.Name], generatedFile{key, path})
		}
	}
	return out, nil
}

// generatedLabel marks, in the test's model only, a Secret addGenerated
// made, with the ConfigMap it came from.
const generatedLabel = "deploy-test/generated-by"

// addGenerated adds the Secrets a ConfigMap's kustomization.yaml
// generates (the identity job applies it) to the cluster, each key with
// a placeholder value, so that what mounts them is checked as for any
// other Secret. Run again after a change, it replaces them.
func (c *cluster) addGenerated() error {
	for name, cm := range c.configMaps {
		doc, ok := cm.Data["kustomization.yaml"]
		if !ok {
			continue
		}
		gen, err := parseGenerator(doc)
		if err != nil {
			return fmt.Errorf("ConfigMap %s: %w", name, err)
		}
		for secret, files := range gen {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: namespace}, StringData: map[string]string{}}
			for _, f := range files {
				s.StringData[f.key] = placeholderMark + ": generated from " + f.path
			}
			id := "Secret " + key(s.ObjectMeta)
			if prev, dup := c.source[id]; dup && c.secrets[key(s.ObjectMeta)].Labels[generatedLabel] != name {
				return fmt.Errorf("ConfigMap %s generates %s, also declared in %s", name, id, prev)
			}
			s.Labels = map[string]string{generatedLabel: name} // rerunning replaces it
			c.source[id] = c.source["ConfigMap "+name]
			c.secrets[key(s.ObjectMeta)] = s
		}
	}
	return nil
}

// kustomization is the part of kustomization.yaml checked here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// productionFiles reads k8s/kustomization.yaml, which must list every
// manifest of k8s/ except those under dev/, and returns their paths.
func productionFiles(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	var want, got []string
	for _, f := range manifestFiles(t) {
		rel, _ := filepath.Rel(k8sDir, f)
		if !strings.HasPrefix(rel, "dev"+string(filepath.Separator)) {
			want = append(want, filepath.ToSlash(rel))
		}
	}
	got = append(got, k.Resources...)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Errorf("kustomization.yaml resources %v, want every manifest outside dev/: %v", got, want)
	}
	var paths []string
	for _, r := range k.Resources {
		paths = append(paths, filepath.Join(k8sDir, filepath.FromSlash(r)))
	}
	return paths
}

// TestDecodeIsStrict makes sure the decoding above rejects what kubectl
// would (or what it would silently drop): a misspelt field, a field at
// the wrong level, a wrongly typed value, an unknown kind.
func TestDecodeIsStrict(t *testing.T) {
	base := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, namespace: keyedge}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n"
	if err := newCluster().decodeDocument("ok.yaml", []byte(base)); err != nil {
		t.Fatalf("valid Deployment rejected: %v", err)
	}
	bad := map[string]string{
		"misspelt field":           strings.Replace(base, "selector:", "selecter:", 1),
		"field at the wrong level": strings.Replace(base, "spec: {containers", "spec: {replicas: 2, containers", 1),
		"wrong type":               strings.Replace(base, "metadata: {name: x,", "metadata: {name: [x],", 1),
		"duplicate field":          base + "metadata: {name: y}\n",
		"unknown kind":             strings.Replace(base, "kind: Deployment", "kind: Deploymint", 1),
		"bad quantity":             strings.Replace(base, "image: i}", "image: i, resources: {limits: {memory: 1Gb}}}", 1),
	}
	for name, doc := range bad {
		if err := newCluster().decodeDocument("bad.yaml", []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
