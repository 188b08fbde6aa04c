//go:build integration

// Package faults tests the health prober against the lab's real Samba
// servers with real faults: SIGKILL, SIGSTOP, a partition (the server's
// bridge port down), and slow and jittery links through a toxiproxy proxy.
// It runs as root (it injects the faults) inside the lab's client
// namespace; make test/faults does both.
package faults

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/test/lab"
)

const (
	envLabDir = "CSI_SMB_LAB_DIR"
	envSoak   = "CSI_SMB_SOAK" // how long the slow/jittery link tests run, default 1m
	victim    = "n2"
	victimIP  = "10.213.0.2"
)

var theLab *lab.Lab //nolint:gochecknoglobals // the lab this process was started against

func TestMain(m *testing.M) {
	l, err := lab.Load(os.Getenv(envLabDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults tests need a running lab (make test/faults):", err)
		os.Exit(2)
	}
	theLab = l
	goleak.VerifyTestMain(m)
}

// watch runs a prober on addr and records its verdicts.
type watch struct {
	p      *health.Prober
	store  *health.Store
	mu     sync.Mutex
	states []health.Verdict
	stop   func()
}

func startWatch(t testing.TB, addr string, dial health.Dialer) *watch {
	t.Helper()
	w := &watch{store: health.NewStore()}
	w.p = health.NewProber(dial, w.store, health.ProberOptions{})
	sub := w.store.Subscribe()
	release := w.p.Acquire(addr, auth.Credentials{Username: lab.User, Password: lab.Password})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- w.p.Run(ctx) }()
	go func() {
		done <- health.Consume(ctx, sub, func(u health.Update) {
			if u.Kind == health.KindServer && !u.Gone {
				w.mu.Lock()
				w.states = append(w.states, u.Server)
				w.mu.Unlock()
			}
		})
	}()
	w.stop = func() {
		release()
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(w.stop)
	return w
}

func realDialer() health.Dialer {
	return health.Adapt(smb.ProbeDialer{}.DialProbe)
}

// waitFor polls the verdict every 5 ms until it is want, returning how
// long since start that took (start: just before the fault was applied).
func (w *watch) waitFor(t testing.TB, addr string, want health.State, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for time.Since(start) < limit {
		if v, _ := w.store.Server(addr); v.State == want {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	v, _ := w.store.Server(addr)
	t.Fatalf("%s is %v (%s: %s) after %v, want %v", addr, v.State, v.Reason, v.Message, limit, want)
	return 0
}

// count returns how many verdict changes had state s.
func (w *watch) count(s health.State, reason string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, v := range w.states {
		if v.State == s && (reason == "" || v.Reason == reason) {
			n++
		}
	}
	return n
}

func fault(t testing.TB, action, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := theLab.Fault(ctx, action, target); err != nil {
		t.Fatalf("fault %s %s: %v", action, target, err)
	}
}

func soak() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(envSoak)); err == nil {
		return d
	}
	return time.Minute
}

// withServerConf restarts the victim's smbd with conf as extra global
// smb.conf settings, and again without them when the test ends.
func withServerConf(t *testing.T, conf string) {
	t.Helper()
	s, err := theLab.Server(victim)
	if err != nil {
		t.Fatal(err)
	}
	restart := func(conf string) {
		if err := os.WriteFile(s.ExtraConf(), []byte(conf), 0o644); err != nil {
			t.Error(err)
			return
		}
		fault(t, lab.ActKill, victim)
		fault(t, lab.ActStart, victim)
	}
	restart(conf)
	t.Cleanup(func() { restart("") })
}
