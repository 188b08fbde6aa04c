// Package probe is the one-shot diagnosis behind `csi-smb probe`: what the
// node plugin would see of an SMB share, step by step, each step bounded by
// its own deadline. It sets up a probe session to the server the path names
// (pkg/smb, as the health prober does) and reports the dialect, signing and
// encryption the server's answers announced, sends ECHOs and lets the
// prober's failure detector (pkg/health) judge them, resolves the path's
// DFS referrals (pkg/dfs) and probes every storage target the same way, and
// stats the path on the share (on each target for a DFS path). The Report
// says what it found and the Verdict sums it up.
//
// Run is one pass. Watch follows a directory Run found with SMB2
// CHANGE_NOTIFY (`csi-smb probe --watch`) and streams what changes in it.
package probe

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Options tune a probe. Zero values get defaults.
type Options struct {
	// Timeout bounds each step: one session setup, one ECHO, one referral,
	// one stat. Default 5 s.
	Timeout time.Duration
	// Count is the number of ECHOs per server, default 5.
	Count int
	// Interval separates the ECHOs, default 200 ms.
	Interval time.Duration
	// Detector judges the ECHOs; default health.DefaultDetectorConfig, the
	// prober's.
	Detector health.DetectorConfig
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Count <= 0 {
		o.Count = 5
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Detector == (health.DetectorConfig{}) {
		o.Detector = health.DefaultDetectorConfig()
	}
	return o
}

// StatFunc stats path on share of the server at addr (pkg/smb's
// ProbeDialer.StatShare).
type StatFunc func(ctx context.Context, addr, share, path string, creds auth.Credentials) (smb.ShareStat, error)

// Deps are the probe's I/O; zero values get pkg/smb over TCP.
type Deps struct {
	// Dial opens the TCP connections of the probe sessions and the
	// referral requests; default net.Dialer.
	Dial smb.DialFunc
	// Stat checks a path; default ProbeDialer.StatShare over Dial.
	Stat StatFunc
	// DialTree opens a watch's connection; default ProbeDialer.DialTree
	// over Dial.
	DialTree WatchDialFunc
	// Now stamps watch events; default time.Now.
	Now func() time.Time
}

func (d Deps) now() func() time.Time {
	if d.Now == nil {
		return time.Now
	}
	return d.Now
}

// Request is what to probe, and as whom.
type Request struct {
	Target volume.Source
	Creds  auth.Credentials
	// CredentialsFrom says where Creds came from, for the report: "file",
	// "environment" or "none".
	CredentialsFrom string
}

// Run probes req.Target. It always returns a report: what failed is in it.
func Run(ctx context.Context, req Request, opts Options, deps Deps) Report {
	start := time.Now()
	p := &run{opts: opts.withDefaults(), dialer: smb.ProbeDialer{Dial: deps.Dial}, stat: deps.Stat}
	if p.stat == nil {
		p.stat = p.dialer.StatShare
	}
	r := Report{
		Version: ReportVersion, Target: req.Target.String(), Time: start.UTC(), Problems: []string{},
		Credentials: CredentialsReport{User: req.Creds.String(), Source: req.CredentialsFrom},
	}
	r.Server = p.server(ctx, req.Target.Address(), req.Creds)
	if r.Server.Reachable {
		r.DFS = p.dfs(ctx, req.Target, req.Creds)
		if r.DFS == nil || len(r.DFS.Targets) == 0 {
			sr := p.share(ctx, req.Target, req.Creds)
			r.Share = &sr
		}
	}
	r.Verdict, r.Problems = judge(r)
	r.TookMs = ms(time.Since(start))
	return r
}

// run is one probe's settings and collaborators.
type run struct {
	opts   Options
	dialer smb.ProbeDialer
	stat   StatFunc
}

// share checks src's path on its share.
func (p *run) share(ctx context.Context, src volume.Source, creds auth.Credentials) ShareReport {
	sr := ShareReport{Address: src.Address(), Share: src.Share, Path: src.Path}
	sctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	st, err := p.stat(sctx, sr.Address, src.Share, src.Path, creds)
	// An encrypted session's TREE_CONNECT answer is encrypted too: then
	// the share's flags are not known, but its traffic is encrypted.
	sr.Encrypted = st.Security.SessionEncrypted()
	if st.Security.TreeDone {
		sr.Encrypted = sr.Encrypted || st.Security.Tree.ShareFlags&wire.ShareFlagEncrypt != 0
		sr.DFSRoot = st.Security.Tree.ShareFlags&wire.ShareFlagDFSRoot != 0
	}
	sr.Status = statusOf(st.Info, err)
	if err != nil {
		sr.Error = err.Error()
	}
	return sr
}

// statusOf classifies a stat's outcome.
func statusOf(fi fs.FileInfo, err error) string {
	switch {
	case err == nil && fi != nil && fi.IsDir():
		return ShareOK
	case err == nil && fi != nil:
		return ShareNotDirectory
	case errors.Is(err, smb.ErrShareNotFound):
		return ShareMissing
	case errors.Is(err, os.ErrNotExist):
		return SharePathMissing
	case errors.Is(err, smb.ErrAuth), errors.Is(err, smb.ErrAccessDenied):
		return ShareDenied
	case errors.Is(err, smb.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return ShareUnreachable
	}
	return ShareError
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
