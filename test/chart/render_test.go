//go:build chart

// Package chart tests the Helm chart by rendering it with `helm template`
// (hack/build-helm.sh builds helm; `make test/chart` passes its path in HELM)
// and asserting on the typed Kubernetes objects.
package chart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

const (
	chartDir   = "../../charts/csi-smb"
	release    = "csi-smb"
	namespace  = "kube-system"
	defaultDir = "/var/lib/kubelet"
	driverName = "smb.csi-smb.io"
)

// manifests is one rendering of the chart, by kind.
type manifests struct {
	raw             string
	controller      *appsv1.Deployment
	node            *appsv1.DaemonSet
	csiDrivers      []*storagev1.CSIDriver
	storageClasses  []*storagev1.StorageClass
	serviceAccounts []*corev1.ServiceAccount
	clusterRoles    map[string]*rbacv1.ClusterRole
	clusterBindings map[string]*rbacv1.ClusterRoleBinding
	roles           map[string]*rbacv1.Role
	roleBindings    map[string]*rbacv1.RoleBinding
	configMaps      []*corev1.ConfigMap
	// Kinds outside client-go's scheme (monitoring.coreos.com PrometheusRules), as decoded YAML.
	prometheusRules []map[string]any
}

func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h := "/var/cache/csi-smb/tools/helm-v4.3.2/helm"
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("no helm: set HELM or run hack/build-helm.sh (make test/chart does): %v", err)
	}
	return h
}

// helmTemplate runs helm template with args after the chart; it returns the
// output and helm's error (with its stderr).
func helmTemplate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	full := append([]string{"template", release, chartDir, "--namespace", namespace}, args...)
	cmd := exec.CommandContext(ctx, helmBin(t), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.Join(err, errors.New(stderr.String()))
	}
	return stdout.String(), nil
}

// valuesFile writes a values file and returns the helm flags that use it.
func valuesFile(t *testing.T, yaml string) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--values", p}
}

// render renders the chart and decodes every document into a typed object.
func render(t *testing.T, args ...string) *manifests {
	t.Helper()
	out, err := helmTemplate(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	m := &manifests{
		raw: out, clusterRoles: map[string]*rbacv1.ClusterRole{}, clusterBindings: map[string]*rbacv1.ClusterRoleBinding{},
		roles: map[string]*rbacv1.Role{}, roleBindings: map[string]*rbacv1.RoleBinding{},
	}
	// Strict: an unknown or duplicated field in a template is an error, not silently dropped.
	decode := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer().Decode
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split the rendered YAML: %v", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := decode(doc, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			m.addUnregistered(t, doc)
			continue
		}
		if err != nil {
			t.Fatalf("decode: %v\n%.300s", err, doc)
		}
		m.add(t, obj)
	}
	return m
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

func (m *manifests) add(t *testing.T, obj runtime.Object) {
	t.Helper()
	switch o := obj.(type) {
	case *appsv1.Deployment:
		if m.controller != nil {
			t.Fatalf("two Deployments: %s and %s", m.controller.Name, o.Name)
		}
		m.controller = o
	case *appsv1.DaemonSet:
		if m.node != nil {
			t.Fatalf("two DaemonSets: %s and %s", m.node.Name, o.Name)
		}
		m.node = o
	case *storagev1.CSIDriver:
		m.csiDrivers = append(m.csiDrivers, o)
	case *storagev1.StorageClass:
		m.storageClasses = append(m.storageClasses, o)
	case *corev1.ServiceAccount:
		m.serviceAccounts = append(m.serviceAccounts, o)
	case *rbacv1.ClusterRole:
		m.clusterRoles[o.Name] = o
	case *rbacv1.ClusterRoleBinding:
		m.clusterBindings[o.Name] = o
	case *rbacv1.Role:
		m.roles[o.Name] = o
	case *rbacv1.RoleBinding:
		m.roleBindings[o.Name] = o
	case *corev1.ConfigMap:
		m.configMaps = append(m.configMaps, o)
	default:
		t.Fatalf("unexpected kind %T", obj)
	}
}

// addUnregistered takes a document of a kind client-go does not know: only the PrometheusRule.
func (m *manifests) addUnregistered(t *testing.T, doc []byte) {
	t.Helper()
	var u map[string]any
	if err := utilyaml.Unmarshal(doc, &u); err != nil {
		t.Fatalf("decode: %v\n%.300s", err, doc)
	}
	if u["apiVersion"] != "monitoring.coreos.com/v1" || u["kind"] != "PrometheusRule" {
		t.Fatalf("unexpected kind %v %v", u["apiVersion"], u["kind"])
	}
	m.prometheusRules = append(m.prometheusRules, u)
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in %v", name, containerNames(spec))
	return corev1.Container{}
}

func containerNames(spec corev1.PodSpec) []string {
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	return names
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func hasVolume(spec corev1.PodSpec, name string) bool {
	for _, v := range spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func mount(t *testing.T, c corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.Name == name {
			return vm
		}
	}
	t.Fatalf("container %s mounts no %q", c.Name, name)
	return corev1.VolumeMount{}
}

// flagValue returns the value of --name=value in args (the last one).
func flagValue(args []string, name string) (string, bool) {
	v, ok := "", false
	for _, a := range args {
		if after, found := strings.CutPrefix(a, "--"+name+"="); found {
			v, ok = after, true
		}
	}
	return v, ok
}

func wantFlag(t *testing.T, c corev1.Container, name, want string) {
	t.Helper()
	got, ok := flagValue(c.Args, name)
	if !ok {
		t.Errorf("%s: no --%s in %q", c.Name, name, c.Args)
		return
	}
	if got != want {
		t.Errorf("%s: --%s=%q, want %q", c.Name, name, got, want)
	}
}

func noFlag(t *testing.T, c corev1.Container, name string) {
	t.Helper()
	if v, ok := flagValue(c.Args, name); ok {
		t.Errorf("%s: unexpected --%s=%s", c.Name, name, v)
	}
}

func hasArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}
