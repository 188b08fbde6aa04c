//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/csi-smb/csi-smb/pkg/driver"
)

// Fault tests use n3 so the other servers stay up for everything else.
const victim = "n3"

// TestStatsNeverBlockOnFrozenServer: with smbd frozen (SIGSTOP, TCP alive,
// the worst case for a blocking statfs), every NodeGetVolumeStats answers
// within 2 s as a success, turns abnormal once the prober has seen the
// freeze, and repeated calls start no statfs of their own (no thread
// growth); it turns normal again after the thaw.
func TestStatsNeverBlockOnFrozenServer(t *testing.T) {
	vol := volumeOn(t, victim)
	_, target := stagedAndPublished(t, vol)
	if resp, took, err := stats(t, vol, target); err != nil || len(resp.GetUsage()) == 0 {
		t.Fatalf("stats on a healthy volume: %v %v (%v)", resp, err, took)
	} else if abnormal, msg, _ := driver.LegacyCondition(resp, 2); abnormal {
		t.Fatalf("healthy volume reported abnormal: %s", msg)
	}
	threadsBefore := driverThreads(t)
	fault(t, "stop", victim)
	thawed := false
	defer func() {
		if !thawed {
			fault(t, "cont", victim)
		}
	}()
	frozenAt := time.Now()
	var worst, abnormalAfter time.Duration
	for i := range 40 {
		resp, took, err := stats(t, vol, target)
		if err != nil {
			t.Fatalf("call %d: NodeGetVolumeStats failed on a frozen server: %v (kubelet would drop the volume)", i, err)
		}
		worst = max(worst, took)
		if took > 2*time.Second {
			t.Fatalf("call %d took %v with the server frozen, want <= 2s", i, took)
		}
		abnormal, msg, _ := driver.LegacyCondition(resp, 2)
		if abnormal && abnormalAfter == 0 {
			abnormalAfter = time.Since(frozenAt)
			t.Logf("frozen server: %q", msg)
		}
		if !abnormal && abnormalAfter != 0 {
			t.Fatalf("call %d: condition went back to normal while the server is frozen: %q", i, msg)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if abnormalAfter == 0 || abnormalAfter > 5*time.Second {
		t.Fatalf("condition abnormal after %v, want within 5 s of the freeze", abnormalAfter)
	}
	threadsAfter := driverThreads(t)
	if threadsAfter > threadsBefore+3 {
		t.Fatalf("driver threads grew from %d to %d over 40 stats calls: statfs calls pile up", threadsBefore, threadsAfter)
	}
	fmt.Printf("RESULT stats with server frozen: 40 calls, worst %v, abnormal after %v, threads %d -> %d\n",
		worst.Round(time.Millisecond), abnormalAfter.Round(time.Millisecond), threadsBefore, threadsAfter)
	fault(t, "cont", victim)
	thawed = true
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, _, err := stats(t, vol, target)
		if abnormal, _, _ := driver.LegacyCondition(resp, 2); err == nil && !abnormal {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stats still abnormal 30s after the server was thawed")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestUnstageOnDeadServer: unpublish and unstage succeed within 30 s and
// leave no mount behind, with the server killed and with it frozen.
func TestUnstageOnDeadServer(t *testing.T) {
	for _, tc := range []struct{ name, breakIt, heal string }{
		{"killed", "kill", "start"},
		{"frozen", "stop", "cont"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := volumeOn(t, victim)
			staging, target := paths(t)
			if err := stage(t, vol, staging, rwx); err != nil {
				t.Fatal(err)
			}
			if err := publish(t, vol, staging, target, rwx, false); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(target, "data"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			fault(t, tc.breakIt, victim)
			defer fault(t, tc.heal, victim)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			if err := unpublish(ctx, vol, target); err != nil {
				t.Fatalf("NodeUnpublishVolume with the server %s: %v", tc.name, err)
			}
			unpub := time.Since(start)
			if err := unstage(ctx, vol, staging); err != nil {
				t.Fatalf("NodeUnstageVolume with the server %s: %v", tc.name, err)
			}
			took := time.Since(start)
			t.Logf("unpublish %v, unstage %v", unpub.Round(time.Millisecond), (took - unpub).Round(time.Millisecond))
			if mountedOn(t, target) || mountedOn(t, staging) {
				t.Fatal("a mount was left behind")
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Fatalf("target path not removed: %v", err)
			}
			fmt.Printf("RESULT unpublish+unstage with server %s: %v\n", tc.name, took.Round(time.Millisecond))
		})
	}
}

// TestHungMountIsKilled: a mount against a frozen server is killed at
// --mount-timeout with its process group, a concurrent stage of the same
// volume is Aborted, and once the server is back the next stage works.
func TestHungMountIsKilled(t *testing.T) {
	vol := volumeOn(t, victim)
	staging, _ := paths(t)
	fault(t, "stop", victim)
	thawed := false
	defer func() {
		if !thawed {
			fault(t, "cont", victim)
		}
	}()
	var wg sync.WaitGroup
	var second error
	wg.Go(func() {
		time.Sleep(2 * time.Second)
		second = stage(t, vol, staging, rwx)
	})
	start := time.Now()
	err := stage(t, vol, staging, rwx)
	took := time.Since(start)
	wg.Wait()
	if err == nil {
		t.Fatal("stage against a frozen server succeeded")
	}
	if took > 25*time.Second {
		t.Fatalf("hung mount returned after %v; --mount-timeout is 15s", took)
	}
	if status.Code(second) != codes.Aborted {
		t.Fatalf("concurrent stage of the same volume: %v, want Aborted", second)
	}
	if mountedOn(t, staging) {
		t.Fatal("killed mount left a mount behind")
	}
	fmt.Printf("RESULT hung mount killed after %v (%v)\n", took.Round(time.Millisecond), status.Code(err))
	fault(t, "cont", victim)
	thawed = true
	if err := stage(t, vol, staging, rwx); err != nil {
		t.Fatalf("stage after the server returned: %v", err)
	}
	if err := unstage(tctx(t, 30*time.Second), vol, staging); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenStagedMountIsRemounted: NodeStageVolume on a staged volume
// whose mount is broken unmounts it and mounts again.
func TestBrokenStagedMountIsRemounted(t *testing.T) {
	vol := volumeOn(t, victim)
	staging, _ := paths(t)
	if err := stage(t, vol, staging, rwx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unstage(context.Background(), vol, staging) }()
	fault(t, "kill", victim)
	err := stage(t, vol, staging, rwx)
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("restage with the server dead: %v, want Unavailable", err)
	}
	if mountedOn(t, staging) {
		t.Fatal("the broken mount is still there")
	}
	fault(t, "start", victim)
	if err := stage(t, vol, staging, rwx); err != nil {
		t.Fatalf("restage after the server returned: %v", err)
	}
	if _, err := os.ReadDir(staging); err != nil {
		t.Fatalf("remounted volume is not readable: %v", err)
	}
}
