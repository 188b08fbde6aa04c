//go:build integration

package faults

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// proxy starts a toxiproxy proxy (used as a library) in front of upstream
// whose answers (the downstream direction) are delayed by latency +- jitter
// milliseconds, and returns its address.
func proxy(t testing.TB, upstream string, latency, jitter int64) string {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	toxic := fmt.Sprintf(`{"type":"latency","stream":"downstream","attributes":{"latency":%d,"jitter":%d}}`, latency, jitter)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(p.Listen); err != nil {
		t.Fatalf("proxy address %q: %v", p.Listen, err)
	}
	return p.Listen
}
