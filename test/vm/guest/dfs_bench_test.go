//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/test/lab"
)

// restartDriver stops the suite's driver (SIGTERM) and starts it again
// with extra flags.
func restartDriver(tb testing.TB, extra ...string) {
	tb.Helper()
	_ = theEnv.conn.Close()
	_ = theEnv.cmd.Process.Signal(os.Interrupt)
	_ = theEnv.cmd.Wait()
	e, err := startDriver(extra...)
	if err != nil {
		tb.Fatalf("restart the driver %v: %v", extra, err)
	}
	theEnv = e
}

// BenchmarkDFSFailover: for each fault on the DFS target a published
// volume uses (dfs\ha), the longest time a reader on the publish path
// (O_DIRECT, every 100 ms) goes without a successful read, over 10 trials,
// with the driver's in-place failover and with the kernel alone
// (--dfs-failover=false), in the same guest run. A reader that gets no read
// through within 45 s counts as 45 s ("never"). Run with -test.benchtime 1x.
func BenchmarkDFSFailover(b *testing.B) {
	const trials, limit = 10, 45 * time.Second
	for _, mode := range []string{"driver", "kernel"} {
		if mode == "kernel" {
			restartDriver(b, "--dfs-failover=false")
			defer restartDriver(b)
		}
		for _, f := range []struct{ name, breakIt, heal string }{
			{"killed", lab.ActKill, lab.ActStart}, {"frozen", lab.ActStop, lab.ActCont}, {"cutoff", lab.ActPart, lab.ActUnpart},
		} {
			b.Run(mode+"/"+f.name, func(b *testing.B) {
				var gaps []time.Duration
				never := 0
				for i := range trials {
					gap, ok := dfsTrial(b, f.breakIt, f.heal, limit, time.Duration(i)*97*time.Millisecond)
					gaps = append(gaps, gap)
					if !ok {
						never++
					}
				}
				report(b, "gap", gaps)
				var s []string
				for _, g := range gaps {
					s = append(s, g.Round(10*time.Millisecond).String())
				}
				fmt.Printf("RESULT dfs failover %s %s: reader gap p50 %v p95 %v over %d trials, %d without a read within %v: %s\n",
					mode, f.name, median(gaps).Round(time.Millisecond), quantile(gaps, 95).Round(time.Millisecond), trials, never, limit,
					strings.Join(s, " "))
			})
		}
	}
}

// dfsTrial stages and publishes a volume on dfs\ha, breaks the target it
// uses under a reader, and returns the reader's longest gap (limit, false
// when no read came through within limit).
func dfsTrial(b *testing.B, breakIt, heal string, limit, jitter time.Duration) (time.Duration, bool) {
	vol := &csi.Volume{VolumeId: fmt.Sprintf("dfs-bench-%d", time.Now().UnixNano()),
		VolumeContext: map[string]string{"source": lab.HASource}}
	staging, target := paths(b)
	if err := stage(b, vol, staging, rwx); err != nil {
		b.Fatal(err)
	}
	if err := publish(b, vol, staging, target, rwx, false); err != nil {
		b.Fatal(err)
	}
	_, active := superOf(b, staging)
	victim := serverOf(active)
	file := filepath.Join(target, vol.GetVolumeId())
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var reads ioLog
	var wg sync.WaitGroup
	wg.Go(func() { reader(file, stop, &reads) })
	time.Sleep(time.Second + jitter)
	faultAt := time.Now()
	fault(b, breakIt, victim)
	ok := false
	for time.Since(faultAt) < limit {
		time.Sleep(50 * time.Millisecond)
		reads.mu.Lock()
		n := len(reads.ok)
		ok = n > 0 && reads.ok[n-1].After(faultAt.Add(100*time.Millisecond))
		reads.mu.Unlock()
		if ok {
			break
		}
	}
	end := time.Now()
	if ok {
		time.Sleep(time.Second)
		end = time.Now()
	}
	fault(b, heal, victim)
	close(stop)
	wg.Wait()
	gap, _ := reads.gap(faultAt.Add(-time.Second), end)
	if !ok {
		gap = limit
	}
	ctx := tctx(b, 60*time.Second)
	_ = os.Remove(file)
	if err := unpublish(ctx, vol, target); err != nil {
		b.Fatal(err)
	}
	if err := unstage(ctx, vol, staging); err != nil {
		b.Fatal(err)
	}
	waitNoFence(b, 30*time.Second)
	return gap, ok
}
