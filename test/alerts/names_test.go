package alerts

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const (
	alertsFile    = "../../charts/csi-smb/files/alerts.yaml"
	dashboardFile = "../../charts/csi-smb/files/dashboard.json"
)

func TestMetricNames(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rules")
	body := `histogram_quantile(0.9, rate(csi_smb_probe_rtt_seconds_bucket[5m])) csi_smb_x_sum / csi_smb_x_count
	csi_smb_server_state == 3 # csi_smb_server_state again; go_goroutines and csi-smb are not ours`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := MetricNames(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"csi_smb_probe_rtt_seconds", "csi_smb_server_state", "csi_smb_x"}; !slices.Equal(got, want) {
		t.Errorf("MetricNames = %q, want %q", got, want)
	}
	if _, err := MetricNames(p, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("MetricNames of a missing file: no error")
	}
}

func TestRegistered(t *testing.T) {
	got, err := Registered()
	if err != nil {
		t.Fatal(err)
	}
	// Spot checks: a histogram, a counter vector, a plain gauge and a vector without series.
	for _, n := range []string{"csi_smb_probe_rtt_seconds", "csi_smb_probe_failures_total", "csi_smb_dfs_fences",
		"csi_smb_volume_health"} {
		if !slices.Contains(got, n) {
			t.Errorf("Registered() = %q: no %s", got, n)
		}
	}
	if len(got) < 11 {
		t.Errorf("Registered() = %q: only %d", got, len(got))
	}
}

// TestFilesUseRegisteredMetrics: every metric the alerts and the dashboard name exists, and the dashboard
// shows every metric the driver registers.
func TestFilesUseRegisteredMetrics(t *testing.T) {
	registered, err := Registered()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{alertsFile, dashboardFile} {
		used, err := MetricNames(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(used) == 0 {
			t.Errorf("%s names no csi_smb_ metric", f)
		}
		for _, n := range used {
			if !slices.Contains(registered, n) {
				t.Errorf("%s: %s is not a metric pkg/metrics registers (%q)", f, n, registered)
			}
		}
		if f == dashboardFile {
			for _, n := range registered {
				if !slices.Contains(used, n) {
					t.Errorf("%s has no panel for %s", f, n)
				}
			}
		}
	}
}
