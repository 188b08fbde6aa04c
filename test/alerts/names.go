// Package alerts checks the chart's Prometheus rules (charts/csi-smb/files/alerts.yaml) and Grafana dashboard
// (files/dashboard.json) against the metrics the driver registers: MetricNames lists what the files name,
// Registered what pkg/metrics registers. The rules' behaviour is tested by promtool (alerts_test.yaml,
// make test/alerts).
package alerts

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/csi-smb/csi-smb/pkg/metrics"
)

// metricToken is a csi-smb metric name as PromQL writes it; fqNameInDesc takes the name out of a
// prometheus.Desc's String(); seriesSuffixes are those a histogram's series add to its name.
var (
	metricToken    = regexp.MustCompile(`csi_smb_[a-z0-9_]+`)
	fqNameInDesc   = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)
	seriesSuffixes = []string{"_bucket", "_sum", "_count"}
)

// MetricNames returns the csi_smb_ metric names that the files mention, sorted and without duplicates, with a
// histogram's _bucket, _sum and _count suffixes stripped (csi_smb_probe_rtt_seconds_bucket is
// csi_smb_probe_rtt_seconds).
func MetricNames(files ...string) ([]string, error) {
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("metric names: %w", err)
		}
		for _, tok := range metricToken.FindAllString(string(b), -1) {
			for _, s := range seriesSuffixes {
				if base, ok := strings.CutSuffix(tok, s); ok {
					tok = base
					break
				}
			}
			names = append(names, tok)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Registered returns the names of the metrics metrics.New registers whose names start with csi_smb_ (not the Go
// and process collectors'), sorted. It reads every collector's descriptors, so a vector without series yet
// counts too.
func Registered() ([]string, error) {
	rec := &recorder{}
	if _, err := metrics.New(rec); err != nil {
		return nil, fmt.Errorf("registered metrics: %w", err)
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range rec.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var names []string
	var bad []string
	for d := range ch {
		m := fqNameInDesc.FindStringSubmatch(d.String())
		if m == nil {
			bad = append(bad, d.String())
			continue
		}
		if strings.HasPrefix(m[1], "csi_smb_") {
			names = append(names, m[1])
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("registered metrics: descriptors without a name: %q", bad)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// recorder is a prometheus.Registerer that keeps what is registered on it.
type recorder struct{ collectors []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }
