//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/driver"
)

// BenchmarkNodeStageVolume measures NodeStageVolume (a kernel cifs mount
// through mount.cifs, with the password on a pipe) and NodeUnstageVolume in
// the qemu guest against real Samba on the lab bridge. The guest runs under
// TCG emulation, so absolute times are slower than on real hardware.
func BenchmarkNodeStageVolume(b *testing.B) {
	const cycles = 100 // fixed, so that -benchtime 1x (used for the fault benchmarks) still measures
	vol := volumeOn(b, "n2")
	staging, _ := paths(b)
	var stageLat, unstageLat []time.Duration
	for range b.N {
		for range cycles {
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
	}
	reportQ(b, "stage", stageLat, 99)
	b.ReportMetric(float64(quantile(unstageLat, 50).Microseconds())/1000, "unstage-p50-ms")
	fmt.Printf("RESULT NodeStageVolume over %d cycles: p50 %v p99 %v; NodeUnstageVolume p50 %v\n", len(stageLat),
		quantile(stageLat, 50), quantile(stageLat, 99), quantile(unstageLat, 50))
}

// BenchmarkDetection compares, in the same guest run, how long the driver
// and the kernel take to notice that the server under a published volume
// was killed, frozen or partitioned, over 10 trials per fault: the driver's
// NodeGetVolumeHealth turning INACCESSIBLE, and a statfs on the mount (with
// the driver's default options: soft, echo_interval=5) returning an error.
// It also measures how long both take to be healthy again, counted from
// the moment the server serves again. Run with -test.benchtime 1x.
func BenchmarkDetection(b *testing.B) {
	const trials = 10
	for _, f := range []struct{ name, breakIt, heal string }{
		{"killed", "kill", "start"}, {"frozen", "stop", "cont"}, {"partitioned", "part", "unpart"},
	} {
		b.Run(f.name, func(b *testing.B) {
			vol := volumeOn(b, victim)
			_, target := stagedAndPublished(b, vol)
			var drv, krn, drvBack, krnBack []time.Duration
			for i := range trials {
				waitHealth(b, vol, target, 60*time.Second, "healthy", healthy)
				waitStatfs(b, target, true, 60*time.Second)
				time.Sleep(3*time.Second + time.Duration(i)*97*time.Millisecond)
				kernel := make(chan time.Duration, 1)
				start := time.Now()
				go func() { kernel <- firstStatfs(target, false, start, 120*time.Second) }()
				fault(b, f.breakIt, victim)
				waitHealth(b, vol, target, 60*time.Second, "INACCESSIBLE", inaccessible)
				drv = append(drv, time.Since(start))
				k := <-kernel
				krn = append(krn, k)
				// Both "back" clocks start once the server serves again
				// (for a restart, once smbd listens), and run side by side.
				healStart := time.Now()
				fault(b, f.heal, victim)
				healTook := time.Since(healStart)
				start = time.Now()
				go func() { kernel <- firstStatfs(target, true, start, 120*time.Second) }()
				drvBack = append(drvBack, waitHealth(b, vol, target, 60*time.Second, "healthy", healthy))
				krnBack = append(krnBack, <-kernel)
				fmt.Printf("RESULT trial %s %d: driver %v, kernel %v; heal took %v; back: driver %v, kernel %v\n", f.name, i,
					drv[i].Round(time.Millisecond), k.Round(time.Millisecond), healTook.Round(time.Millisecond),
					drvBack[i].Round(time.Millisecond), krnBack[i].Round(time.Millisecond))
			}
			report(b, "driver-detect", drv)
			report(b, "kernel-detect", krn)
			report(b, "driver-back", drvBack)
			report(b, "kernel-back", krnBack)
			b.ReportMetric(median(krn).Seconds()/median(drv).Seconds(), "kernel/driver")
		})
	}
}

// firstStatfs calls statfs on path until it succeeds (wantOK) or fails, and
// returns when that first happened, counted from start.
func firstStatfs(path string, wantOK bool, start time.Time, limit time.Duration) time.Duration {
	for time.Since(start) < limit {
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); (err == nil) == wantOK {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return limit
}

func waitStatfs(b *testing.B, path string, wantOK bool, limit time.Duration) {
	b.Helper()
	if d := firstStatfs(path, wantOK, time.Now(), limit); d >= limit {
		b.Fatalf("statfs on %s did not become ok=%v within %v", path, wantOK, limit)
	}
}

// BenchmarkRPCLatencyDeadServer stages 100 volumes on one server, kills
// it, and measures NodeGetVolumeHealth and NodeGetVolumeStats latency
// (p50, p99 over 2,000 calls each) while every one of them is dead.
func BenchmarkRPCLatencyDeadServer(b *testing.B) {
	const n, rounds = 100, 20
	type staged struct {
		vol     *csi.Volume
		staging string
	}
	var vols []staged
	for range n {
		v := volumeOn(b, victim)
		st, _ := paths(b)
		if err := stage(b, v, st, rwx); err != nil {
			b.Fatal(err)
		}
		vols = append(vols, staged{v, st})
	}
	defer func() {
		for _, s := range vols {
			// A remount the monitor runs at that moment holds the volume: Aborted, retry.
			for try := 0; try < 50 && unstage(context.Background(), s.vol, s.staging) != nil; try++ {
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	fault(b, "kill", victim)
	defer fault(b, "start", victim)
	for _, s := range vols {
		waitHealth(b, s.vol, "", 60*time.Second, "INACCESSIBLE", inaccessible)
	}
	var healthLat, statsLat []time.Duration
	for range rounds {
		for _, s := range vols {
			t0 := time.Now()
			if _, err := theEnv.node.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: s.vol.GetVolumeId(), StagingTargetPath: s.staging}); err != nil {
				b.Fatal(err)
			}
			healthLat = append(healthLat, time.Since(t0))
			t0 = time.Now()
			resp, err := theEnv.node.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: s.vol.GetVolumeId(), VolumePath: s.staging})
			if err != nil {
				b.Fatal(err)
			}
			statsLat = append(statsLat, time.Since(t0))
			if abnormal, _, _ := driver.LegacyCondition(resp, 2); !abnormal {
				b.Fatal("a volume on a dead server reported normal")
			}
		}
	}
	reportQ(b, "health", healthLat, 99)
	reportQ(b, "stats", statsLat, 99)
	fmt.Printf("RESULT rpc latency with %d volumes on a dead server: health p50 %v p99 %v; stats p50 %v p99 %v\n", n,
		quantile(healthLat, 50), quantile(healthLat, 99), quantile(statsLat, 50), quantile(statsLat, 99))
}

func quantile(d []time.Duration, q int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, (len(s)*q+99)/100-1)]
}

func median(d []time.Duration) time.Duration { return quantile(d, 50) }

func report(b *testing.B, name string, d []time.Duration) {
	b.ReportMetric(float64(quantile(d, 50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(quantile(d, 95).Microseconds())/1000, name+"-p95-ms")
}

func reportQ(b *testing.B, name string, d []time.Duration, q int) {
	b.ReportMetric(float64(quantile(d, 50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(quantile(d, q).Microseconds())/1000, fmt.Sprintf("%s-p%d-ms", name, q))
}
