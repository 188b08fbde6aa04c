//go:build chart

package chart

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const (
	alertsFile    = chartDir + "/files/alerts.yaml"
	dashboardFile = chartDir + "/files/dashboard.json"
)

func TestMonitoringOffByDefault(t *testing.T) {
	t.Parallel()
	m := render(t)
	if len(m.prometheusRules) != 0 || len(m.configMaps) != 0 {
		t.Errorf("defaults render %d PrometheusRules and %d ConfigMaps, want none", len(m.prometheusRules), len(m.configMaps))
	}
	for _, s := range []string{"PrometheusRule", "grafana_dashboard", "CsiSmb"} {
		if strings.Contains(m.raw, s) {
			t.Errorf("defaults render %q", s)
		}
	}
}

func TestPrometheusRule(t *testing.T) {
	t.Parallel()
	m := render(t, valuesFile(t, `
monitoring:
  prometheusRule:
    enabled: true
    labels: {release: kube-prometheus-stack, team: storage}
`)...)
	if len(m.prometheusRules) != 1 || len(m.configMaps) != 0 {
		t.Fatalf("%d PrometheusRules and %d ConfigMaps, want 1 and 0", len(m.prometheusRules), len(m.configMaps))
	}
	r := m.prometheusRules[0]
	meta, _ := r["metadata"].(map[string]any)
	if meta["name"] != "csi-smb" || meta["namespace"] != namespace {
		t.Errorf("PrometheusRule %v/%v, want %s/csi-smb", meta["namespace"], meta["name"], namespace)
	}
	labels, _ := meta["labels"].(map[string]any)
	for k, want := range map[string]string{"release": "kube-prometheus-stack", "team": "storage",
		"app.kubernetes.io/instance": release, "app.kubernetes.io/name": "csi-smb"} {
		if labels[k] != want {
			t.Errorf("label %s=%v, want %q (labels %v)", k, labels[k], want, labels)
		}
	}

	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := utilyaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file) != 1 || file["groups"] == nil {
		t.Fatalf("%s: want a rule file with only groups, got keys %v", alertsFile, keys(file))
	}
	spec, _ := r["spec"].(map[string]any)
	if !reflect.DeepEqual(spec["groups"], file["groups"]) || len(spec) != 1 {
		t.Errorf("spec is not %s (spec keys %v)", alertsFile, keys(spec))
	}
	// The rules went through no template engine: Prometheus's own templates are still there.
	if !strings.Contains(m.raw, "{{ $labels.server }}") || !strings.Contains(m.raw, "{{ $value") {
		t.Error("the rendered rules lost their {{ $labels }} / {{ $value }} templates")
	}
	if n := strings.Count(m.raw, "- alert: CsiSmb"); n != strings.Count(string(raw), "- alert: CsiSmb") || n < 10 {
		t.Errorf("%d alerts rendered", n)
	}
}

func TestDashboardConfigMap(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, values, key, value string
		annotations              map[string]string
	}{
		{"defaults", "monitoring: {dashboard: {enabled: true}}", "grafana_dashboard", "1", nil},
		{"own label and folder", `
monitoring:
  dashboard:
    enabled: true
    labelKey: example.com/dashboard
    labelValue: smb
    annotations: {grafana_folder: Storage}
`, "example.com/dashboard", "smb", map[string]string{"grafana_folder": "Storage"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, valuesFile(t, tc.values)...)
			if len(m.configMaps) != 1 || len(m.prometheusRules) != 0 {
				t.Fatalf("%d ConfigMaps and %d PrometheusRules, want 1 and 0", len(m.configMaps), len(m.prometheusRules))
			}
			cm := m.configMaps[0]
			if cm.Name != "csi-smb-dashboard" || cm.Namespace != namespace {
				t.Errorf("ConfigMap %s/%s", cm.Namespace, cm.Name)
			}
			if cm.Labels[tc.key] != tc.value || cm.Labels["app.kubernetes.io/instance"] != release {
				t.Errorf("labels %v, want %s=%s", cm.Labels, tc.key, tc.value)
			}
			if !reflect.DeepEqual(cm.Annotations, tc.annotations) {
				t.Errorf("annotations %v, want %v", cm.Annotations, tc.annotations)
			}
			js, ok := cm.Data["csi-smb.json"]
			if !ok || len(cm.Data) != 1 {
				t.Fatalf("data keys %v, want csi-smb.json", keys(cm.Data))
			}
			if js != strings.TrimRight(string(raw), "\n") {
				t.Error("csi-smb.json is not files/dashboard.json")
			}
			var d struct {
				UID           string `json:"uid"`
				SchemaVersion int    `json:"schemaVersion"`
				Panels        []struct {
					Type string `json:"type"`
				} `json:"panels"`
			}
			if err := json.Unmarshal([]byte(js), &d); err != nil {
				t.Fatalf("csi-smb.json: %v", err)
			}
			if d.UID != "csi-smb" || d.SchemaVersion < 36 || len(d.Panels) < 10 {
				t.Errorf("dashboard uid %q, schemaVersion %d, %d panels", d.UID, d.SchemaVersion, len(d.Panels))
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
