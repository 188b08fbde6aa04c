// Package metrics exports the driver's health as Prometheus metrics: the
// gate-free channel that works on every Kubernetes version.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/csi-smb/csi-smb/pkg/health"
)

const namespace = "csi_smb"

// Metrics holds the collectors; build it with New on a registry made in main.
type Metrics struct {
	rtt         *prometheus.HistogramVec
	failures    *prometheus.CounterVec
	serverState *prometheus.GaugeVec
	volumeState *prometheus.GaugeVec
	remounts    *prometheus.CounterVec
	failovers   *prometheus.CounterVec
	failoverDur prometheus.Histogram
	fences      prometheus.Gauge
}

// New registers the collectors (and the Go and process collectors) on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "probe_rtt_seconds",
			Help:    "Round-trip time of SMB2 ECHO probes, per server.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14), // 100 µs .. ~15 s
		}, []string{"server"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "probe_failures_total",
			Help: "Failed probes per server; outcome is timeout (no answer) or failed (refused or reset).",
		}, []string{"server", "outcome"}),
		serverState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "server_state",
			Help: "Prober verdict per server: 0 unknown, 1 healthy, 2 degraded, 3 unreachable.",
		}, []string{"server"}),
		volumeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "volume_health",
			Help: "Health per staged volume: 0 unknown, 1 healthy, 2 degraded, 3 inaccessible; reason as in NodeGetVolumeHealth.",
		}, []string{"volume_id", "reason"}),
		remounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "remounts_total",
			Help: "Remounts of wedged mounts whose server still answered, by result (ok, error).",
		}, []string{"result"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dfs_failovers_total",
			Help: "DFS volumes moved to another target; by whether the driver fenced the target they left (fenced: true) or the kernel moved by itself.",
		}, []string{"fenced"}),
		failoverDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dfs_failover_seconds",
			Help:    "From fencing a dead DFS target to the kernel's mount being connected to another one.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 10), // 50 ms .. ~25 s
		}),
		fences: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "dfs_fences",
			Help: "DFS targets fenced on this node now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.rtt, m.failures, m.serverState, m.volumeState, m.remounts,
		m.failovers, m.failoverDur, m.fences,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// ProbeObserved records one probe (health.Recorder).
func (m *Metrics) ProbeObserved(addr string, o health.Observation) {
	switch o.Outcome {
	case health.Success:
		m.rtt.WithLabelValues(addr).Observe(o.RTT.Seconds())
	case health.Timeout:
		m.failures.WithLabelValues(addr, "timeout").Inc()
	case health.Failed:
		m.failures.WithLabelValues(addr, "failed").Inc()
	}
}

// Follow keeps the server and volume health series in step with the
// health store until ctx ends.
func (m *Metrics) Follow(ctx context.Context, sub *health.Subscription) error {
	return health.Consume(ctx, sub, func(u health.Update) {
		switch {
		case u.Kind == health.KindServer && u.Gone:
			m.serverState.DeleteLabelValues(u.Name)
			m.rtt.DeleteLabelValues(u.Name)
			m.failures.DeletePartialMatch(prometheus.Labels{"server": u.Name})
		case u.Kind == health.KindServer:
			m.serverState.WithLabelValues(u.Name).Set(float64(u.Server.State))
		case u.Gone:
			m.volumeState.DeletePartialMatch(prometheus.Labels{"volume_id": u.Name})
		default:
			m.volumeState.DeletePartialMatch(prometheus.Labels{"volume_id": u.Name})
			m.volumeState.WithLabelValues(u.Name, u.Volume.Reason).Set(float64(u.Volume.State))
		}
	})
}

// FailedOver counts a DFS volume's move to another target; took is from
// the fence to the move (0 when the kernel moved by itself).
func (m *Metrics) FailedOver(fenced bool, took time.Duration) {
	m.failovers.WithLabelValues(fmt.Sprint(fenced)).Inc()
	if fenced {
		m.failoverDur.Observe(took.Seconds())
	}
}

// Fences sets the number of fenced DFS targets.
func (m *Metrics) Fences(n int) { m.fences.Set(float64(n)) }

// Remounted counts a remount attempt.
func (m *Metrics) Remounted(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.remounts.WithLabelValues(result).Inc()
}

// Handler serves /metrics from gatherer.
func Handler(gatherer prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})
}
