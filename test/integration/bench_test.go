//go:build integration

package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// BenchmarkCreateVolume measures CreateVolume through the driver's gRPC
// socket against real Samba: with 1 and with 16 concurrent callers as fast
// as they can go (saturation), and with 16 callers paced to an aggregate
// 100 volumes/s, where latency counts from each request's scheduled start
// (so falling behind shows up as latency). It reports p50/p99 latency and
// volumes per second; volumes are deleted after the timed part.
func BenchmarkCreateVolume(b *testing.B) {
	for _, tc := range []struct {
		callers int
		rate    float64 // volumes per second in total; 0 = as fast as possible
	}{{1, 0}, {16, 0}, {16, 100}} {
		name := fmt.Sprintf("callers=%d", tc.callers)
		if tc.rate > 0 {
			name += fmt.Sprintf("/rate=%g", tc.rate)
		}
		callers := tc.callers
		b.Run(name, func(b *testing.B) {
			c := controller(b)
			run := fmt.Sprintf("bench-%d", time.Now().UnixNano())
			// Warm the pooled session, as a running controller has.
			warm, err := c.CreateVolume(context.Background(), createReq(run+"-warm", nil))
			if err != nil {
				b.Fatal(err)
			}
			ids := []string{warm.GetVolume().GetVolumeId()}
			var next atomic.Int64
			lat := make([]time.Duration, b.N)
			var mu sync.Mutex
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						if tc.rate > 0 {
							t0 = start.Add(time.Duration(float64(i) / tc.rate * float64(time.Second)))
							time.Sleep(time.Until(t0))
						}
						resp, err := c.CreateVolume(context.Background(), createReq(fmt.Sprintf("%s-%d", run, i), nil))
						lat[i] = time.Since(t0)
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						ids = append(ids, resp.GetVolume().GetVolumeId())
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "vols/s")
			for _, id := range ids {
				if _, err := c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets()}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
