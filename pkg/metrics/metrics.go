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
	watches     *prometheus.GaugeVec
	watchLosses *prometheus.CounterVec
	dirEvents   *prometheus.CounterVec
	watchSeen   map[string]health.WatchState // by watch key, what Follow counted last; Follow's goroutine only
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
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "dir_watches",
			Help: "SMB2 CHANGE_NOTIFY watches on directories that hold volumes, by role (controller, node, or all for a process serving both) and state (watching; lost: down, their volumes are polled; unsupported: the server requires an encryption the driver's requests lack (AES-CCM), their volumes are polled).",
		}, []string{"role", "state"}),
		watchLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dir_watch_losses_total",
			Help: "Directory watches that went down (connection lost, server unreachable, directory gone), by role.",
		}, []string{"role"}),
		dirEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "volume_dir_events_total",
			Help: "What directory watches saw happen to volume directories (removed, renamed, restored) and full rescans (rescan), by role.",
		}, []string{"role", "action"}),
		watchSeen: map[string]health.WatchState{},
	}
	// Counters exist at zero from the start, so alerts on their increase
	// see the first one.
	for _, r := range []string{"ok", "error"} {
		m.remounts.WithLabelValues(r)
	}
	for _, f := range []string{"true", "false"} {
		m.failovers.WithLabelValues(f)
	}
	for _, role := range []string{"controller", "node", "all"} {
		for _, st := range []string{"watching", "lost", "unsupported"} {
			m.watches.WithLabelValues(role, st)
		}
		m.watchLosses.WithLabelValues(role)
		for _, a := range []string{"removed", "renamed", "restored", "rescan"} {
			m.dirEvents.WithLabelValues(role, a)
		}
	}
	for _, c := range []prometheus.Collector{m.rtt, m.failures, m.serverState, m.volumeState, m.remounts,
		m.failovers, m.failoverDur, m.fences, m.watches, m.watchLosses, m.dirEvents,
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
			// A server's series exist from its first verdict, at zero, so
			// rate() and increase() see its first failure.
			m.rtt.WithLabelValues(u.Name)
			m.failures.WithLabelValues(u.Name, "timeout")
			m.failures.WithLabelValues(u.Name, "failed")
		case u.Kind == health.KindWatch:
			m.watchChanged(u.Name, u.Watch, u.Gone)
		case u.Kind != health.KindVolume:
		case u.Gone:
			m.volumeState.DeletePartialMatch(prometheus.Labels{"volume_id": u.Name})
		default:
			m.volumeState.DeletePartialMatch(prometheus.Labels{"volume_id": u.Name})
			m.volumeState.WithLabelValues(u.Name, u.Volume.Reason).Set(float64(u.Volume.State))
		}
	})
}

// watchChanged moves a watch between the watching and lost gauges and adds
// what its totals grew by to the counters.
func (m *Metrics) watchChanged(key string, w health.WatchState, gone bool) {
	old, seen := m.watchSeen[key]
	if seen {
		m.watches.WithLabelValues(old.Role, watchState(old)).Dec()
	}
	if gone {
		delete(m.watchSeen, key)
		return
	}
	m.watches.WithLabelValues(w.Role, watchState(w)).Inc()
	m.watchSeen[key] = w
	add := func(c prometheus.Counter, now, before uint64) {
		if now > before {
			c.Add(float64(now - before))
		}
	}
	add(m.watchLosses.WithLabelValues(w.Role), w.Losses, old.Losses)
	add(m.dirEvents.WithLabelValues(w.Role, "removed"), w.Removed, old.Removed)
	add(m.dirEvents.WithLabelValues(w.Role, "renamed"), w.Renamed, old.Renamed)
	add(m.dirEvents.WithLabelValues(w.Role, "restored"), w.Restored, old.Restored)
	add(m.dirEvents.WithLabelValues(w.Role, "rescan"), w.Rescans, old.Rescans)
}

func watchState(w health.WatchState) string {
	switch {
	case w.Watching:
		return "watching"
	case w.Unsupported:
		return "unsupported"
	}
	return "lost"
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
