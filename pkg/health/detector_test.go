package health

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func ok(rtt time.Duration) Observation { return Observation{Outcome: Success, RTT: rtt} }
func miss() Observation                { return Observation{Outcome: Timeout, Err: errors.New("deadline")} }
func refused() Observation {
	return Observation{Outcome: Failed, Err: errors.New("connection refused")}
}
func connected() Observation { return Observation{Outcome: Connected} }
func starved() Observation   { return Observation{Outcome: Timeout, Lag: time.Second} }

func TestDetectorTransitions(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		obs    []Observation
		want   State
		reason string
	}{
		{"nothing seen", nil, StateUnknown, ReasonNotProbed},
		{"first answer", []Observation{ok(ms)}, StateHealthy, ReasonReachable},
		{"one miss is not death", []Observation{ok(ms), miss()}, StateDegraded, ReasonProbeMissed},
		{"two misses are", []Observation{ok(ms), miss(), miss()}, StateUnreachable, ReasonUnreachable},
		{"refused twice", []Observation{ok(ms), refused(), refused()}, StateUnreachable, ReasonUnreachable},
		{"miss then answer", []Observation{ok(ms), miss(), ok(ms)}, StateHealthy, ReasonReachable},
		{"miss, answer, miss", []Observation{ok(ms), miss(), ok(ms), miss()}, StateDegraded, ReasonProbeMissed},
		{"hysteresis: one answer does not recover", []Observation{ok(ms), miss(), miss(), connected()}, StateUnreachable, ReasonUnreachable},
		{"two answers recover", []Observation{ok(ms), miss(), miss(), connected(), ok(ms)}, StateHealthy, ReasonReachable},
		{"recovery interrupted", []Observation{ok(ms), miss(), miss(), connected(), miss(), ok(ms)}, StateUnreachable, ReasonUnreachable},
		{"starved misses are ignored", []Observation{ok(ms), starved(), starved(), starved()}, StateHealthy, ReasonReachable},
		{"starved miss does not reset the count", []Observation{ok(ms), miss(), starved(), miss()}, StateUnreachable, ReasonUnreachable},
		{"down from the start", []Observation{refused(), refused()}, StateUnreachable, ReasonUnreachable},
		{"slow server", []Observation{ok(1500 * ms), ok(1500 * ms)}, StateDegraded, ReasonSlow},
		{"slow server stays slow just under the mark", []Observation{ok(600 * ms), ok(600 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms), ok(450 * ms)}, StateDegraded, ReasonSlow},
		{"slow server recovers well under the mark", []Observation{ok(600 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms), ok(10 * ms)}, StateHealthy, ReasonReachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(DefaultDetectorConfig())
			at := t0
			for _, o := range tc.obs {
				at = at.Add(time.Second)
				o.At = at
				d = d.Observe(o)
			}
			v := d.Verdict()
			if v.State != tc.want || v.Reason != tc.reason {
				t.Fatalf("verdict %v/%s (%s), want %v/%s", v.State, v.Reason, v.Message, tc.want, tc.reason)
			}
		})
	}
}

func TestDetectorSinceTracksStateChanges(t *testing.T) {
	d := NewDetector(DefaultDetectorConfig())
	d = d.Observe(Observation{Outcome: Success, RTT: time.Millisecond, At: t0})
	d = d.Observe(Observation{Outcome: Success, RTT: time.Millisecond, At: t0.Add(time.Second)})
	if !d.Verdict().Since.Equal(t0) {
		t.Fatalf("Since moved without a state change: %v", d.Verdict().Since)
	}
	d = d.Observe(Observation{Outcome: Timeout, At: t0.Add(2 * time.Second)})
	d = d.Observe(Observation{Outcome: Timeout, At: t0.Add(3 * time.Second)})
	if v := d.Verdict(); !v.Since.Equal(t0.Add(3*time.Second)) || !v.LastSuccess.Equal(t0.Add(time.Second)) {
		t.Fatalf("Since %v LastSuccess %v", v.Since, v.LastSuccess)
	}
}

func TestDetectorTimeoutsAdapt(t *testing.T) {
	ms := time.Millisecond
	cfg := DefaultDetectorConfig()
	tests := []struct {
		name         string
		rtts         []time.Duration
		echo, dial   time.Duration
		echoAtLeastX time.Duration // echo deadline must exceed this (the link's worst RTT)
	}{
		{"no samples", nil, cfg.InitialTimeout, cfg.InitialDialTimeout, 0},
		{"fast LAN hits the floors", []time.Duration{ms, ms, ms}, cfg.MinTimeout, cfg.MinDialTimeout, 0},
		{"1.5 s link", []time.Duration{1500 * ms, 1500 * ms, 1500 * ms, 1500 * ms}, 0, 0, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDetector(cfg)
			for _, r := range tc.rtts {
				d = d.Observe(ok(r))
			}
			if tc.echo != 0 && d.EchoTimeout() != tc.echo {
				t.Errorf("echo timeout %v, want %v", d.EchoTimeout(), tc.echo)
			}
			if tc.dial != 0 && d.DialTimeout() != tc.dial {
				t.Errorf("dial timeout %v, want %v", d.DialTimeout(), tc.dial)
			}
			if d.EchoTimeout() < tc.echoAtLeastX {
				t.Errorf("echo timeout %v on a %v link", d.EchoTimeout(), tc.rtts[0])
			}
			if len(tc.rtts) > 0 && tc.rtts[0] > time.Second && d.DialTimeout() < 5*tc.rtts[0] {
				t.Errorf("dial timeout %v cannot fit a 5-round-trip session setup", d.DialTimeout())
			}
		})
	}
}

// TestDetectorNoFalseAlarmsOnJitter replays 10 minutes of 1 Hz probes on a
// link with 200 +- 150 ms one-way latency in each direction (RTT 100-700 ms):
// every answer arrives before the adaptive deadline, so no probe misses.
func TestDetectorNoFalseAlarmsOnJitter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := NewDetector(DefaultDetectorConfig())
	for i := range 600 {
		oneWay := func() time.Duration { return time.Duration(50+rng.IntN(301)) * time.Millisecond }
		rtt := oneWay() + oneWay()
		if i > 0 && rtt >= d.EchoTimeout() {
			t.Fatalf("probe %d: RTT %v would miss the %v deadline", i, rtt, d.EchoTimeout())
		}
		d = d.Observe(Observation{Outcome: Success, RTT: rtt, At: t0.Add(time.Duration(i) * time.Second)})
		if d.Verdict().State == StateUnreachable {
			t.Fatalf("probe %d: unreachable on a jittery but working link", i)
		}
	}
}

// TestDetectorSilent: a server that accepts TCP and never answers SMB is
// marked Silent (frozen); a refusal or a cut-off is not; an answer clears it.
func TestDetectorSilent(t *testing.T) {
	d := NewDetector(DefaultDetectorConfig())
	d = d.Observe(Observation{Outcome: Success, RTT: time.Millisecond, At: t0})
	d = d.Observe(Observation{Outcome: Timeout, At: t0.Add(time.Second)})
	d = d.Observe(Observation{Outcome: Timeout, Silent: true, At: t0.Add(2 * time.Second)})
	if v := d.Verdict(); v.State != StateUnreachable || !v.Silent {
		t.Fatalf("frozen: %+v, want Unreachable and Silent", v)
	}
	d = d.Observe(Observation{Outcome: Timeout, At: t0.Add(3 * time.Second)})
	if d.Verdict().Silent {
		t.Fatal("a dial that timed out (cut off) kept Silent")
	}
	d = d.Observe(Observation{Outcome: Failed, Silent: false, At: t0.Add(4 * time.Second)})
	d = d.Observe(Observation{Outcome: Timeout, Silent: true, At: t0.Add(5 * time.Second)})
	d = d.Observe(Observation{Outcome: Connected, At: t0.Add(6 * time.Second)})
	if d.Verdict().Silent {
		t.Fatal("an answer kept Silent")
	}
}
