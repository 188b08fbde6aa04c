//go:build integration

package faults

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
	dirwatch "github.com/csi-smb/csi-smb/pkg/watch"
)

// BenchmarkDirWatch10k: the controller's view of 10,000 volumes in one
// base directory of one share, by polling (today's check of every
// directory each minute, 4 at a time) and by one CHANGE_NOTIFY watch. It
// reports, per mode: the first round (until every volume has a verdict),
// then the steady cost per minute (SMB requests the controller sends, its
// own CPU, the serving smbd's CPU), and the time from a directory removed
// on the server's disk, half way between two polls, to the controller's
// verdict. Run with
// -test.benchtime 1x (make bench/faults BENCH=DirWatch10k SOAKS='^$').
func BenchmarkDirWatch10k(b *testing.B) {
	const n = 10000
	base := fmt.Sprintf("scale-%d", time.Now().UnixNano())
	disk := filepath.Join(theLab.Dir, victim, "shares", "share", base)
	for i := range n {
		if err := os.MkdirAll(filepath.Join(disk, fmt.Sprintf("pvc-%05d", i)), 0o777); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = os.RemoveAll(disk) })
	for i, mode := range []string{"poll", "watch"} {
		b.Run(mode, func(b *testing.B) { scaleRun(b, mode == "watch", base, disk, n, 1000+i*2000) })
	}
}

func scaleRun(b *testing.B, watching bool, base, disk string, n, victimIdx int) {
	var reqs atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, n: &reqs}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stops []chan error
	run := func(f func(context.Context) error) {
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		stops = append(stops, done)
	}
	defer func() {
		cancel()
		for _, d := range stops {
			if err := <-d; err != nil {
				b.Error(err)
			}
		}
	}()
	pool := smb.NewPool(smb.Options{Dial: dial})
	run(pool.Run)
	store := health.NewStore()
	addr := victimIP + ":445"
	store.SetServer(addr, health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
	check := func(ctx context.Context, v volume.Volume, creds auth.Credentials) (bool, error) {
		sh, release, err := pool.Share(ctx, v.Source.Server, v.Source.Share, creds)
		if err != nil {
			return false, err
		}
		defer release()
		return provision.Exists(ctx, sh, v)
	}
	opts := inventory.Options{CheckInterval: time.Minute}
	if watching {
		w := dirwatch.New(func(ctx context.Context, addr, share string, creds auth.Credentials) (dirwatch.Conn, error) {
			return smb.ProbeDialer{Dial: dial}.DialTree(ctx, addr, share, creds)
		}, smb.Dirs{Pool: pool}, store, dirwatch.Options{Role: "controller"})
		run(w.Run)
		opts.Watches = w
	}
	inv := inventory.New(check, noProbes{}, store, opts)
	ids := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("pvc-%05d", i)
		v := volume.Volume{Source: volume.Source{Server: victimIP, Share: "share", Path: base}, SubDir: name,
			OnDelete: volume.OnDeleteRetain, UID: volume.UIDFor(name)}
		ids[i] = v.ID()
		inv.Track(ids[i], v, 1<<30, labCreds)
	}
	cost := func() (int64, time.Duration, time.Duration) {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		srv, err := theLab.ServerCPU(victim)
		if err != nil {
			b.Fatal(err)
		}
		return reqs.Load(), time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), srv
	}
	r0, c0, s0 := cost()
	start := time.Now()
	run(inv.Run)
	for {
		ready := 0
		for _, e := range inv.List() {
			if e.Verdict.Reason == health.ReasonVolumeHealthy {
				ready++
			}
		}
		if ready == n {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d volumes have a verdict after 5 min", ready, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := time.Since(start)
	r1, c1, s1 := cost()
	// Steady state: up to two minutes after the start, which holds the
	// poll's second round (it starts a minute after the first).
	window := 2*time.Minute - first
	time.Sleep(window)
	r2, c2, s2 := cost()
	perMin := func(x float64) float64 { return x / window.Minutes() }
	// The removal comes half way between two polls (rounds start on the
	// minute since the start): the poll's mean case.
	time.Sleep(30 * time.Second)
	victimDir := fmt.Sprintf("pvc-%05d", victimIdx)
	removed := time.Now()
	if err := os.RemoveAll(filepath.Join(disk, victimDir)); err != nil {
		b.Fatal(err)
	}
	var verdict time.Duration
	for {
		if e, _ := inv.Get(ids[victimIdx]); e.Verdict.Reason == inventory.ReasonDirMissing {
			verdict = time.Since(removed)
			break
		}
		if time.Since(removed) > 3*time.Minute {
			b.Fatalf("removal of %s not seen after 3 min", victimDir)
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Mkdir(filepath.Join(disk, victimDir), 0o777); err != nil { // for the next mode
		b.Fatal(err)
	}
	b.ReportMetric(first.Seconds(), "first-round-s")
	b.ReportMetric(float64(r1-r0), "first-round-requests")
	b.ReportMetric(float64((c1 - c0).Milliseconds()), "first-round-cpu-ms")
	b.ReportMetric(perMin(float64(r2-r1)), "requests/min")
	b.ReportMetric(perMin(float64((c2 - c1).Milliseconds())), "cpu-ms/min")
	b.ReportMetric(perMin(float64((s2 - s1).Milliseconds())), "smbd-cpu-ms/min")
	b.ReportMetric(float64(verdict.Microseconds())/1000, "removal-to-verdict-ms")
	fmt.Printf("RESULT dirwatch10k watch=%v: first round %v (%d requests, %v CPU, smbd %v); steady %.0f requests/min, %.0f ms CPU/min, smbd %.0f ms/min; removal seen after %v\n",
		watching, first.Round(time.Millisecond), r1-r0, c1-c0, s1-s0, perMin(float64(r2-r1)), perMin(float64((c2 - c1).Milliseconds())),
		perMin(float64((s2 - s1).Milliseconds())), verdict.Round(time.Millisecond))
}

type noProbes struct{}

func (noProbes) Acquire(string, auth.Credentials) func() { return func() {} }

// countingConn counts the SMB2 requests written on a connection, the
// commands of a compound included.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	msg := b
	if len(msg) >= 4+64 && msg[0] == 0 && string(msg[4:8]) == "\xfeSMB" {
		msg = msg[4:] // a whole frame in one write (our own requests)
	}
	for range 64 { // a compound chain, bounded
		if len(msg) < 64 || string(msg[0:4]) != "\xfeSMB" {
			break
		}
		c.n.Add(1)
		next := binary.LittleEndian.Uint32(msg[20:24])
		if next == 0 || int(next) >= len(msg) {
			break
		}
		msg = msg[next:]
	}
	return c.Conn.Write(b)
}
