package health

import (
	"context"
	"errors"
	"time"

	"github.com/csi-smb/csi-smb/pkg/smb"
)

// worker is the probe loop of one server: a fixed-rate ECHO schedule
// anchored to absolute time (ticks never drift and are never skipped
// because other traffic flowed), at most one ECHO outstanding, each under a
// deadline. A miss closes the session (a connection that timed out is never
// reused) and redials at once: that redial is the confirming probe. Failed
// redials back off from BackoffMin to BackoffMax.
type worker struct {
	p       *Prober
	t       *target
	anchor  time.Time
	sess    Session
	retryAt time.Time
	backoff time.Duration
}

func (p *Prober) work(ctx context.Context, t *target) {
	w := &worker{p: p, t: t, backoff: p.opts.BackoffMin}
	w.anchor = p.epoch.Add(p.opts.Phase(p.opts.Interval))
	defer w.drop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	due := w.tick(time.Now(), false)
	for {
		if !w.wait(ctx, timer, due) {
			return
		}
		now := time.Now()
		if now.Before(due) {
			due = now // the connection failed (or spoke) early: look now
		}
		w.step(ctx, now.Sub(due))
		if ctx.Err() != nil {
			return
		}
		due = w.nextDue(time.Now())
	}
}

// wait blocks until due: on the session (which wakes early when the
// connection fails) or on the timer when there is none. It reports false
// when ctx ended.
func (w *worker) wait(ctx context.Context, timer *time.Timer, due time.Time) bool {
	if w.sess != nil {
		_ = w.sess.Idle(ctx, due) // an error means the connection failed: the next step sees it
		return ctx.Err() == nil
	}
	timer.Reset(time.Until(due))
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// nextDue is the next grid tick while a session is up, else the redial time.
func (w *worker) nextDue(now time.Time) time.Time {
	if w.sess == nil {
		if w.retryAt.After(now) {
			return w.retryAt
		}
		return now
	}
	return w.tick(now, true)
}

// tick is the first tick of the schedule at or (strictly) after now.
func (w *worker) tick(now time.Time, strictly bool) time.Time {
	if now.Before(w.anchor) {
		return w.anchor
	}
	iv := w.p.opts.Interval
	n := now.Sub(w.anchor) / iv
	if t := w.anchor.Add(n * iv); !strictly && t.Equal(now) {
		return t
	}
	return w.anchor.Add((n + 1) * iv)
}

func (w *worker) step(ctx context.Context, lag time.Duration) {
	if w.sess == nil {
		if !w.dial(ctx, lag) {
			return
		}
		lag = 0 // confirm the new session with an ECHO right away
	}
	det, _ := w.p.snapshot(w.t)
	o := w.echo(ctx, det.EchoTimeout(), lag)
	if ctx.Err() != nil {
		return
	}
	w.p.observe(w.t, o)
	if o.Outcome != Success {
		w.drop()
		w.retryAt = time.Now() // redial now: the confirming probe
	}
}

// dial sets up a session; it reports whether one is up.
func (w *worker) dial(ctx context.Context, lag time.Duration) bool {
	det, creds := w.p.snapshot(w.t)
	timeout := det.DialTimeout()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	start := time.Now()
	sess, err := w.p.dialer.Dial(dctx, w.t.addr, creds)
	cancel()
	if ctx.Err() != nil {
		if err == nil {
			_ = sess.Close()
		}
		return false
	}
	now := time.Now()
	if err != nil {
		o := Observation{Outcome: OutcomeOf(err), At: now, Err: err, Lag: max(lag, now.Sub(start)-timeout),
			Silent: errors.Is(err, smb.ErrSilent)}
		if errors.Is(err, smb.ErrAuth) {
			// The server answered and refused every credential we have: it
			// is alive, but cannot be watched closely; retry slowly.
			o = Observation{Outcome: Connected, At: now}
			w.backoff = 10 * w.p.opts.BackoffMax
		}
		w.p.observe(w.t, o)
		w.retryAt = now.Add(w.backoff)
		w.backoff = min(2*w.backoff, max(w.p.opts.BackoffMax, w.backoff))
		return false
	}
	w.sess = sess
	w.backoff = w.p.opts.BackoffMin
	w.p.observe(w.t, Observation{Outcome: Connected, At: now})
	return true
}

func (w *worker) echo(ctx context.Context, timeout, lag time.Duration) Observation {
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := w.sess.Echo(ectx)
	now := time.Now()
	rtt := now.Sub(start)
	if err == nil {
		return Observation{Outcome: Success, RTT: rtt, At: now, Lag: lag}
	}
	// Noticing the deadline late means we were starved, not the server slow.
	return Observation{Outcome: OutcomeOf(err), At: now, Err: err, Lag: max(lag, rtt-timeout)}
}

func (w *worker) drop() {
	if w.sess != nil {
		_ = w.sess.Close()
		w.sess = nil
	}
}
