package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/pkg/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRecorder(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.ProbeObserved("s:445", health.Observation{Outcome: health.Success, RTT: time.Millisecond})
	m.ProbeObserved("s:445", health.Observation{Outcome: health.Timeout})
	m.ProbeObserved("s:445", health.Observation{Outcome: health.Failed})
	m.ProbeObserved("s:445", health.Observation{Outcome: health.Failed})
	store := health.NewStore()
	sub := store.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	followed := func() { // run the consumer until it has taken in what is pending
		fctx, stop := context.WithTimeout(ctx, 50*time.Millisecond)
		defer stop()
		_ = m.Follow(fctx, sub)
		sub = store.Subscribe()
	}
	store.SetServer("s:445", health.Verdict{State: health.StateUnreachable})
	store.SetVolume("v1", health.VolumeVerdict{State: health.StateDegraded, Reason: "ServerSlow"})
	followed()
	store.SetVolume("v1", health.VolumeVerdict{State: health.StateUnreachable, Reason: "ServerUnreachable"})
	followed()
	m.Remounted(nil)
	m.Remounted(errors.New("x"))
	if got := testutil.ToFloat64(m.failures.WithLabelValues("s:445", "failed")); got != 2 {
		t.Fatalf("failed probes = %v", got)
	}
	if got := testutil.ToFloat64(m.serverState.WithLabelValues("s:445")); got != 3 {
		t.Fatalf("server state = %v", got)
	}
	if n := testutil.CollectAndCount(m.volumeState); n != 1 {
		t.Fatalf("%d volume series, want 1 (the reason changed; the old series must go)", n)
	}
	if got := testutil.ToFloat64(m.volumeState.WithLabelValues("v1", "ServerUnreachable")); got != 3 {
		t.Fatalf("volume state = %v", got)
	}
	store.DeleteVolume("v1")
	store.DeleteServer("s:445")
	followed()
	if n := testutil.CollectAndCount(m.volumeState) + testutil.CollectAndCount(m.serverState) + testutil.CollectAndCount(m.failures); n != 0 {
		t.Fatalf("%d series left after the volume and server went", n)
	}
	if testutil.CollectAndCount(m.rtt) != 0 {
		t.Fatal("rtt series left")
	}
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Remounted(nil)
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, `csi_smb_remounts_total{result="ok"} 1`) {
		t.Fatalf("scrape: %d, lacks the remount counter:\n%.500s", rec.Code, body)
	}
}

func TestWatchMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore()
	sub := store.Subscribe()
	followed := func() {
		fctx, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer stop()
		_ = m.Follow(fctx, sub)
		sub = store.Subscribe()
	}
	store.SetWatch("//s/share/a", health.WatchState{Role: "node", Watching: true, Rescans: 1})
	store.SetWatch("//s/share/b", health.WatchState{Role: "node", Watching: true, Rescans: 1})
	followed()
	// Two changes of a coalesce into one update: the totals lose nothing.
	store.SetWatch("//s/share/a", health.WatchState{Role: "node", Watching: true, Rescans: 1, Removed: 1})
	store.SetWatch("//s/share/a", health.WatchState{Role: "node", Rescans: 1, Removed: 2, Losses: 1})
	followed()
	for _, c := range []struct {
		got  prometheus.Collector
		want float64
	}{
		{m.watches.WithLabelValues("node", "watching"), 1},
		{m.watches.WithLabelValues("node", "lost"), 1},
		{m.watches.WithLabelValues("controller", "watching"), 0},
		{m.watchLosses.WithLabelValues("node"), 1},
		{m.dirEvents.WithLabelValues("node", "removed"), 2},
		{m.dirEvents.WithLabelValues("node", "rescan"), 2},
	} {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%v = %v, want %v", c.got, got, c.want)
		}
	}
	store.DeleteWatch("//s/share/a")
	followed()
	if got := testutil.ToFloat64(m.watches.WithLabelValues("node", "lost")); got != 0 {
		t.Fatalf("lost watches after it went: %v", got)
	}
}

// TestSeriesStartAtZero: counters exist before their first event, and a
// server's probe series from its first verdict, so increase() in an alert
// sees the first remount, failover or failed probe.
func TestSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		c    prometheus.Collector
		want int
	}{{m.remounts, 2}, {m.failovers, 2}, {m.failures, 0}, {m.rtt, 0}} {
		if n := testutil.CollectAndCount(c.c); n != c.want {
			t.Errorf("%d series at start, want %d", n, c.want)
		}
	}
	store := health.NewStore()
	sub := store.Subscribe()
	store.SetServer("s:445", health.Verdict{State: health.StateHealthy})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_ = m.Follow(ctx, sub)
	if n := testutil.CollectAndCount(m.failures); n != 2 {
		t.Errorf("%d probe failure series for a new server, want 2 (timeout, failed) at 0", n)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("s:445", "timeout")); got != 0 {
		t.Errorf("timeouts = %v", got)
	}
	if n := testutil.CollectAndCount(m.rtt); n != 1 {
		t.Errorf("%d rtt series for a new server, want 1", n)
	}
}
