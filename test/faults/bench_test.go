//go:build integration

package faults

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// BenchmarkDetection measures, over 10 trials per fault, how long the
// prober takes to call a killed, frozen or partitioned real smbd
// unreachable, and to call it healthy again after it returns. Run with
// -test.benchtime 1x; it reports p50 and p95 of both, in milliseconds.
func BenchmarkDetection(b *testing.B) {
	const trials = 10
	addr := victimIP + ":445"
	for _, f := range faults {
		b.Run(f.name, func(b *testing.B) {
			w := startWatch(b, addr, realDialer())
			w.waitFor(b, addr, health.StateHealthy, time.Now(), 15*time.Second)
			var detect, back []time.Duration
			for i := range trials {
				time.Sleep(3*time.Second + time.Duration(i)*97*time.Millisecond) // settle; vary the phase
				start := time.Now()
				fault(b, f.breakIt, victim)
				detect = append(detect, w.waitFor(b, addr, health.StateUnreachable, start, 30*time.Second))
				start = time.Now()
				fault(b, f.heal, victim)
				back = append(back, w.waitFor(b, addr, health.StateHealthy, start, 30*time.Second))
			}
			report(b, "detect", detect)
			report(b, "back", back)
			fmt.Printf("RESULT detection %s: %v; back %v\n", f.name, detect, back)
		})
	}
}

func report(b *testing.B, name string, d []time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	b.ReportMetric(ms(s[len(s)/2]), name+"-p50-ms")
	b.ReportMetric(ms(s[(len(s)*95+99)/100-1]), name+"-p95-ms")
}
