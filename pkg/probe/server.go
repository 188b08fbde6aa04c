package probe

import (
	"context"
	"errors"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// server probes one server as the health prober does: a session, then
// ECHOs at Interval, each under Timeout; a miss closes the session and the
// next turn redials (the confirming probe). The failure detector sees every
// outcome; once it says Unreachable the probe stops.
func (p *run) server(ctx context.Context, addr string, creds auth.Credentials) ServerReport {
	s := &serverProbe{run: p, addr: addr, det: health.NewDetector(p.opts.Detector),
		rep: ServerReport{Address: addr, Echo: EchoReport{RTTMs: []float64{}}}}
	sess := s.open(ctx, creds)
	for i := 0; i < p.opts.Count && s.det.Verdict().State != health.StateUnreachable && !s.noSession; i++ {
		if i > 0 && !sleep(ctx, p.opts.Interval) {
			break
		}
		if sess == nil {
			if sess = s.dial(ctx, s.creds); sess == nil {
				continue
			}
		}
		if !s.echo(ctx, sess) {
			_ = sess.Close() // a connection that missed is never reused
			sess = nil
		}
	}
	if sess != nil {
		_ = sess.Close()
	}
	v := s.det.Verdict()
	s.rep.Health = HealthReport{State: v.State.String(), Reason: v.Reason, Message: v.Message}
	if s.noSession && v.State == health.StateHealthy {
		s.rep.Health.Message = "answers, but refuses every logon the probe tried: no ECHO sent"
	}
	s.rep.Echo.SRTTMs = ms(v.SRTT)
	return s.rep
}

// serverProbe is the state of one server's probe.
type serverProbe struct {
	*run
	addr      string
	creds     auth.Credentials // what the sessions log on with
	det       health.Detector
	rep       ServerReport
	noSession bool // the server answers but accepts no logon
}

// open sets up the first session with creds; when the server refuses
// them, it says so and goes on anonymously (what the node's prober does),
// so the server's liveness is still measured.
func (s *serverProbe) open(ctx context.Context, creds auth.Credentials) *smb.ProbeSession {
	s.creds = creds
	sess, err := s.try(ctx, creds)
	switch {
	case err == nil && creds.Anonymous():
		s.rep.Logon = LogonAnonymous
	case err == nil:
		s.rep.Logon = LogonAccepted
	case errors.Is(err, smb.ErrAuth) && !creds.Anonymous():
		s.rep.Logon, s.rep.Error = LogonRejected, err.Error()
		s.creds = auth.Credentials{}
		sess, err = s.try(ctx, s.creds)
	}
	s.settle(sess, err)
	return sess
}

// dial sets up a later session (after a miss) with the credentials that
// worked.
func (s *serverProbe) dial(ctx context.Context, creds auth.Credentials) *smb.ProbeSession {
	sess, err := s.try(ctx, creds)
	s.settle(sess, err)
	return sess
}

// try is one bounded session setup, observed by the detector.
func (s *serverProbe) try(ctx context.Context, creds auth.Credentials) (*smb.ProbeSession, error) {
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	start := time.Now()
	sess, err := s.dialer.DialWith(dctx, s.addr, creds)
	now := time.Now()
	switch {
	case err == nil, errors.Is(err, smb.ErrAuth):
		// A refused logon is an answer: the server is alive.
		s.observe(health.Observation{Outcome: health.Connected, At: now})
	case ctx.Err() == nil:
		s.observe(health.Observation{Outcome: health.OutcomeOf(err), At: now, Err: err,
			Lag: max(0, now.Sub(start)-s.opts.Timeout), Silent: errors.Is(err, smb.ErrSilent)})
	}
	return sess, err
}

// settle records what a setup gave: the session's security, or the error.
func (s *serverProbe) settle(sess *smb.ProbeSession, err error) {
	if err != nil {
		if s.rep.Error == "" || !errors.Is(err, smb.ErrAuth) {
			s.rep.Error = err.Error()
		}
		s.noSession = errors.Is(err, smb.ErrAuth)
		return
	}
	if s.rep.Session == nil {
		s.rep.Session = sessionReport(sess.Security())
	}
}

// echo sends one ECHO and reports whether it was answered.
func (s *serverProbe) echo(ctx context.Context, sess *smb.ProbeSession) bool {
	ectx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	start := time.Now()
	err := sess.Echo(ectx)
	now := time.Now()
	rtt := now.Sub(start)
	if ctx.Err() != nil {
		return false
	}
	s.rep.Echo.Sent++
	if err == nil {
		s.rep.Echo.Answered++
		s.rep.Echo.RTTMs = append(s.rep.Echo.RTTMs, ms(rtt))
		s.observe(health.Observation{Outcome: health.Success, RTT: rtt, At: now})
		return true
	}
	s.rep.Error = err.Error()
	s.observe(health.Observation{Outcome: health.OutcomeOf(err), At: now, Err: err, Lag: max(0, rtt-s.opts.Timeout)})
	return false
}

func (s *serverProbe) observe(o health.Observation) {
	s.det = s.det.Observe(o)
	if o.Outcome == health.Success || o.Outcome == health.Connected {
		s.rep.Reachable = true
	}
}

// sessionReport is what the server's setup answers said.
func sessionReport(sec smb.Security) *SessionReport {
	r := &SessionReport{
		SigningRequired: sec.SigningRequired(), Signed: sec.SessionSigned(), Encrypted: sec.SessionEncrypted(),
		Guest: sec.Guest(), Null: sec.Anonymous(), Answers: sec.Answers, SignedAnswers: sec.Signed,
	}
	if !sec.Negotiated {
		return r
	}
	n := sec.Negotiate
	r.Dialect = wire.DialectName(n.Dialect)
	r.DFS = n.Capabilities&wire.CapDFS != 0
	r.SigningAlgorithm = wire.DialectSigning(n.Dialect)
	if len(n.SigningAlgorithms) == 1 {
		r.SigningAlgorithm = wire.SigningName(n.SigningAlgorithms[0])
	}
	switch c := sec.Cipher(); {
	case c != 0:
		r.EncryptionCapable, r.Cipher = true, wire.CipherName(c)
	case n.Dialect >= 0x0300 && n.Dialect < 0x0311:
		// 3.0 and 3.0.2 announce encryption as a capability; the cipher is AES-128-CCM (MS-SMB2 3.2.5.2).
		if r.EncryptionCapable = n.Capabilities&wire.CapEncryption != 0; r.EncryptionCapable {
			r.Cipher = wire.CipherName(1)
		}
	}
	return r
}

// sleep waits d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
