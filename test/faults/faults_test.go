//go:build integration

package faults

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// Faults and the detection bounds the tests assert (the goals: a killed
// server within 1 s, a frozen or partitioned one within 3 s, healthy again
// within 3 s of its return).
var faults = []struct {
	name, breakIt, heal string
	detect              time.Duration
}{
	{"killed", "kill", "start", time.Second},
	{"frozen", "stop", "cont", 3 * time.Second},
	{"partitioned", "part", "unpart", 3 * time.Second},
}

// TestProberSeesRealFaults kills, freezes and partitions a real smbd under
// a prober that uses the production session code.
func TestProberSeesRealFaults(t *testing.T) {
	addr := victimIP + ":445"
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			w := startWatch(t, addr, realDialer())
			w.waitFor(t, addr, health.StateHealthy, time.Now(), 15*time.Second)
			time.Sleep(3 * time.Second) // a settled RTT estimate, as in steady state
			start := time.Now()
			fault(t, f.breakIt, victim)
			healed := false
			defer func() {
				if !healed {
					fault(t, f.heal, victim)
				}
			}()
			detect := w.waitFor(t, addr, health.StateUnreachable, start, 30*time.Second)
			start = time.Now()
			fault(t, f.heal, victim)
			healed = true
			back := w.waitFor(t, addr, health.StateHealthy, start, 30*time.Second)
			fmt.Printf("RESULT prober %s: unreachable after %v, healthy %v after the server returned\n",
				f.name, detect.Round(time.Millisecond), back.Round(time.Millisecond))
			if detect > f.detect {
				t.Errorf("%s server seen after %v, goal %v", f.name, detect, f.detect)
			}
			if back > 3*time.Second {
				t.Errorf("healthy %v after the server returned, goal 3 s", back)
			}
		})
	}
}

// TestSlowAndJitteryLinksAreNotDead runs the prober through a toxiproxy
// proxy whose latency toxic delays every answer: 1.5 s (slow), or
// 200 +- 150 ms (jittery). Over the soak period (1 min in make test, 10 min
// in make bench) no verdict may be Unreachable.
func TestSlowAndJitteryLinksAreNotDead(t *testing.T) {
	for _, link := range []struct {
		name            string
		latency, jitter int64
	}{
		{"slow 1.5s", 1500, 0},
		{"jitter 200+-150ms", 200, 150},
	} {
		t.Run(link.name, func(t *testing.T) {
			t.Parallel()
			addr := proxy(t, victimIP+":445", link.latency, link.jitter)
			w := startWatch(t, addr, realDialer())
			w.waitFor(t, addr, health.StateHealthy, time.Now(), 30*time.Second)
			time.Sleep(soak())
			v, _ := w.store.Server(addr)
			unreachable, missed := w.count(health.StateUnreachable, ""), w.count(health.StateDegraded, health.ReasonProbeMissed)
			fmt.Printf("RESULT link %s over %v: %d unreachable verdicts, %d missed probes, final %v/%s, SRTT %v\n",
				link.name, soak(), unreachable, missed, v.State, v.Reason, v.SRTT.Round(time.Millisecond))
			if unreachable != 0 {
				t.Fatalf("%d false unreachable verdicts on a working link", unreachable)
			}
		})
	}
}

// TestStarvedProberDoesNotBlame runs the prober while busy loops at a higher
// priority than ours fight for the 2 cores: no false Unreachable.
func TestStarvedProberDoesNotBlame(t *testing.T) {
	addr := victimIP + ":445"
	w := startWatch(t, addr, realDialer())
	w.waitFor(t, addr, health.StateHealthy, time.Now(), 15*time.Second)
	var hogs []*exec.Cmd
	for range 8 {
		c := exec.Command("nice", "-n", "-10", "sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	defer func() {
		for _, c := range hogs {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			_ = c.Wait()
		}
	}()
	time.Sleep(soak() / 2)
	v, _ := w.store.Server(addr)
	unreachable := w.count(health.StateUnreachable, "")
	fmt.Printf("RESULT starved prober over %v with 8 hogs: %d unreachable verdicts, %d missed probes, final %v/%s\n",
		soak()/2, unreachable, w.count(health.StateDegraded, health.ReasonProbeMissed), v.State, v.Reason)
	if unreachable != 0 {
		t.Fatalf("a starved prober blamed a healthy server %d times: %s", unreachable, strings.TrimSpace(v.Message))
	}
}
