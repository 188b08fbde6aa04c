//go:build vmguest

package guest

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkNodeStageVolume measures NodeStageVolume (a kernel cifs mount
// through mount.cifs, with the password on a pipe) and NodeUnstageVolume in
// the qemu guest against real Samba on the lab bridge. The guest runs under
// TCG emulation, so absolute times are slower than on real hardware.
func BenchmarkNodeStageVolume(b *testing.B) {
	vol := volumeOn(b, "n2")
	staging, _ := paths(b)
	stageLat := make([]time.Duration, 0, b.N)
	unstageLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := stage(b, vol, staging, rwx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := unstage(context.Background(), vol, staging); err != nil {
			b.Fatal(err)
		}
		stageLat = append(stageLat, t1.Sub(t0))
		unstageLat = append(unstageLat, time.Since(t1))
	}
	b.StopTimer()
	slices.Sort(stageLat)
	slices.Sort(unstageLat)
	b.ReportMetric(float64(stageLat[len(stageLat)/2].Microseconds())/1000, "stage-p50-ms")
	b.ReportMetric(float64(stageLat[len(stageLat)*99/100].Microseconds())/1000, "stage-p99-ms")
	b.ReportMetric(float64(unstageLat[len(unstageLat)/2].Microseconds())/1000, "unstage-p50-ms")
}
