// Package health watches SMB servers and mounts and says what it sees.
//
// The Prober keeps one persistent SMB2 session per server and sends an ECHO
// on a fixed-rate schedule. A Detector per server turns the probe outcomes
// into a verdict: Healthy, Degraded or Unreachable. The Monitor runs a
// bounded statfs per staged volume, combines it with its server's verdict,
// and asks for a remount of a mount that stays wedged while its server is
// fine. Both publish to the Store; RPCs read verdicts from it and never
// probe, and consumers (metrics, Events, remount) subscribe to it.
package health

import (
	"fmt"
	"time"
)

// State is a server's (or volume's) health.
type State int

// States, in order of severity.
const (
	StateUnknown     State = iota // not probed yet
	StateHealthy                  // answering within its usual time
	StateDegraded                 // answering, but slowly, or one probe just missed
	StateUnreachable              // confirmed not answering
)

func (s State) String() string {
	switch s {
	case StateHealthy:
		return "Healthy"
	case StateDegraded:
		return "Degraded"
	case StateUnreachable:
		return "Unreachable"
	}
	return "Unknown"
}

// Outcome is what one probe saw.
type Outcome int

// Probe outcomes.
const (
	Success   Outcome = iota // ECHO answered; RTT is a sample
	Connected                // a new session was set up; the server answers, but the dial time is not an RTT
	Timeout                  // no answer before the deadline
	Failed                   // refused or reset: the server (or its host) actively said no
)

func (o Outcome) String() string {
	return [...]string{"Success", "Connected", "Timeout", "Failed"}[o]
}

// Observation is one probe outcome, as the prober saw it.
type Observation struct {
	Outcome Outcome
	RTT     time.Duration // Success only
	At      time.Time
	// Lag is how late the prober ran compared to its plan: the tick fired
	// late, or the deadline was noticed late. A large lag means this process
	// was starved of CPU; a miss seen then proves nothing about the server.
	Lag time.Duration
	Err error // Timeout and Failed: why
	// Silent: a Timeout after the TCP connection was accepted (the server
	// is frozen with its host up, not cut off).
	Silent bool
}

// Reasons are CamelCase, as the CSI health API wants them.
const (
	ReasonNotProbed   = "NotProbedYet"
	ReasonReachable   = "ServerReachable"
	ReasonSlow        = "ServerSlow"
	ReasonProbeMissed = "ProbeMissed"
	ReasonUnreachable = "ServerUnreachable"
)

// Verdict is the detector's current judgement of a server.
type Verdict struct {
	State       State
	Reason      string
	Message     string
	Since       time.Time     // when State last changed
	SRTT        time.Duration // smoothed round-trip time, 0 before the first sample
	LastSuccess time.Time
	// Silent: the last failed probe was accepted over TCP and then got no
	// SMB answer: the server is frozen, not gone or cut off. Requests in
	// flight to it may be applied when it resumes.
	Silent bool
}

// DetectorConfig tunes a Detector. DefaultDetectorConfig documents the defaults.
type DetectorConfig struct {
	MinTimeout, MaxTimeout, InitialTimeout             time.Duration // ECHO deadline bounds
	MinDialTimeout, MaxDialTimeout, InitialDialTimeout time.Duration // session setup deadline bounds
	MissesToUnreachable                                int           // consecutive conclusive misses
	SuccessesToRecover                                 int           // consecutive successes to leave Unreachable
	SlowRTT                                            time.Duration // SRTT at or above this is Degraded (ServerSlow)
	MaxLag                                             time.Duration // a miss seen with more lag is inconclusive
}

// DefaultDetectorConfig: probes every second (the prober's interval) catch a
// frozen server in interval + MinTimeout + MinDialTimeout <= 2.5 s: one
// missed ECHO, then a redial that also gets no answer. A killed server
// resets the connection and refuses the redial within milliseconds.
func DefaultDetectorConfig() DetectorConfig {
	return DetectorConfig{
		MinTimeout: 500 * time.Millisecond, MaxTimeout: 10 * time.Second, InitialTimeout: 2 * time.Second,
		MinDialTimeout: time.Second, MaxDialTimeout: 30 * time.Second, InitialDialTimeout: 10 * time.Second,
		MissesToUnreachable: 2, SuccessesToRecover: 2,
		SlowRTT: 500 * time.Millisecond, MaxLag: 250 * time.Millisecond,
	}
}

// Detector is an RTO-style failure detector (RFC 6298 smoothing) for one
// server. It is a value: Observe returns the next detector, so every
// transition is a pure function of the observation history.
//
// Deadlines adapt to the server: ECHO deadline = max(SRTT + max(4 RTTVAR,
// SRTT/2), 1.5 x the largest of the last 16 RTTs), session setup deadline =
// 8 SRTT + 4 RTTVAR (a setup is ~5 round trips), each within its configured
// bounds. A slow but steady link (1.5 s RTT) gets deadlines above its RTT
// instead of being declared dead, and a jittery one above its recent worst
// (RTTVAR alone dips after a run of average samples).
type Detector struct {
	cfg     DetectorConfig
	srtt    time.Duration
	rttvar  time.Duration
	recent  [recentRTTs]time.Duration
	samples int
	misses  int
	oks     int
	verdict Verdict
}

const recentRTTs = 16

// NewDetector returns a detector that has seen nothing.
func NewDetector(cfg DetectorConfig) Detector {
	return Detector{cfg: cfg, verdict: Verdict{State: StateUnknown, Reason: ReasonNotProbed, Message: "not probed yet"}}
}

// Verdict is the current judgement.
func (d Detector) Verdict() Verdict { return d.verdict }

// EchoTimeout is the deadline for the next ECHO.
func (d Detector) EchoTimeout() time.Duration {
	if d.samples == 0 {
		return d.cfg.InitialTimeout
	}
	worst := time.Duration(0)
	for _, r := range d.recent {
		worst = max(worst, r)
	}
	return clamp(max(d.srtt+max(4*d.rttvar, d.srtt/2), worst*3/2), d.cfg.MinTimeout, d.cfg.MaxTimeout)
}

// DialTimeout is the deadline for the next session setup.
func (d Detector) DialTimeout() time.Duration {
	if d.samples == 0 {
		return d.cfg.InitialDialTimeout
	}
	return clamp(8*d.srtt+4*d.rttvar, d.cfg.MinDialTimeout, d.cfg.MaxDialTimeout)
}

// Observe folds one probe outcome into the detector.
func (d Detector) Observe(o Observation) Detector {
	switch o.Outcome {
	case Success, Connected:
		if o.Outcome == Success {
			d = d.sample(o.RTT)
			d.verdict.SRTT = d.srtt
		}
		d.misses = 0
		d.oks++
		d.verdict.LastSuccess = o.At
		return d.afterSuccess(o)
	default:
		if o.Lag > d.cfg.MaxLag {
			return d // starved: the miss is ours, not the server's
		}
		d.oks = 0
		d.misses++
		return d.afterMiss(o)
	}
}

// sample updates SRTT and RTTVAR as RFC 6298 does.
func (d Detector) sample(rtt time.Duration) Detector {
	if d.samples == 0 {
		d.srtt, d.rttvar = rtt, rtt/2
	} else {
		d.rttvar = (3*d.rttvar + absDur(d.srtt-rtt)) / 4
		d.srtt = (7*d.srtt + rtt) / 8
	}
	d.recent[d.samples%recentRTTs] = rtt
	d.samples++
	return d
}

func (d Detector) afterSuccess(o Observation) Detector {
	d.verdict.Silent = false
	v := d.verdict
	if v.State == StateUnreachable && d.oks < d.cfg.SuccessesToRecover {
		return d.set(StateUnreachable, ReasonUnreachable,
			fmt.Sprintf("answering again (%d of %d probes needed to recover)", d.oks, d.cfg.SuccessesToRecover), o.At)
	}
	// Hysteresis: leaving ServerSlow needs the SRTT well under the mark.
	slowMark := d.cfg.SlowRTT
	if v.State == StateDegraded && v.Reason == ReasonSlow {
		slowMark = d.cfg.SlowRTT * 8 / 10
	}
	if d.samples > 0 && d.srtt >= slowMark {
		return d.set(StateDegraded, ReasonSlow, fmt.Sprintf("round trip %v, at or above %v", d.srtt.Round(time.Millisecond), d.cfg.SlowRTT), o.At)
	}
	return d.set(StateHealthy, ReasonReachable, "answering ECHO", o.At)
}

func (d Detector) afterMiss(o Observation) Detector {
	what := "no answer"
	if o.Outcome == Failed {
		what = "refused or reset"
	}
	if o.Silent {
		what = "TCP accepted, no SMB answer: frozen"
	}
	d.verdict.Silent = o.Silent
	if o.Err != nil {
		what += ": " + o.Err.Error()
	}
	if d.misses >= d.cfg.MissesToUnreachable {
		return d.set(StateUnreachable, ReasonUnreachable, fmt.Sprintf("%d probes failed in a row (%s)", d.misses, what), o.At)
	}
	if d.verdict.State == StateUnreachable {
		return d.set(StateUnreachable, ReasonUnreachable, what, o.At)
	}
	return d.set(StateDegraded, ReasonProbeMissed, fmt.Sprintf("a probe failed (%s); confirming", what), o.At)
}

func (d Detector) set(s State, reason, msg string, at time.Time) Detector {
	if d.verdict.State != s {
		d.verdict.Since = at
	}
	d.verdict.State, d.verdict.Reason, d.verdict.Message = s, reason, msg
	return d
}

func clamp(v, lo, hi time.Duration) time.Duration { return min(max(v, lo), hi) }

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
