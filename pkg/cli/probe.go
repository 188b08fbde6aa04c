package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/probe"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Environment variables the probe takes credentials from, when no
// --credentials file is given. Not mount.cifs's USER and PASSWD: USER is
// set in every login shell, so a probe meant to be anonymous would log on
// as the local user.
const (
	EnvUsername = "SMB_USERNAME"
	EnvPassword = "SMB_PASSWORD"
	EnvDomain   = "SMB_DOMAIN"
)

func probeUsage(fs *flag.FlagSet) func(io.Writer) {
	return func(w io.Writer) {
		fmt.Fprintf(w, `Usage: csi-smb probe [flags] //server/share[/path]

A one-shot diagnosis of an SMB share, as the node plugin sees it:
  - a session to the server (the negotiated dialect, signing and encryption, as the server's answers said them),
  - --count SMB2 ECHOs and their round trips, judged by the node's failure detector,
  - the DFS referral tree (root, link, targets with their TTLs) and every target probed the same way,
  - whether the path exists on the share (on each target, for a DFS path).
Each step is bounded by --timeout. Text for people, --json for scripts (docs/operations.md).

With --watch, after the report, a line per change in the directory (SMB2 CHANGE_NOTIFY: names added, removed and
renamed, files written; --recursive for the subtree) until interrupted or --watch-for; for a DFS path, on the first
target that has it. The directory is opened again every --keepalive, which tells a dead server or a removed
directory from a quiet one. A lost watch is said, set up again and said again, with the note that changes in
between were not seen. The directory removed ends it (exit 2).

Credentials: --credentials FILE, in the mount.cifs format (username=, password=, domain= lines; read at most
16 KiB; anything else is refused); else the environment: %s, %s, %s; else anonymous.
Never on the command line. The password is never printed.

Exit codes:
  %3d  healthy
  %3d  degraded: usable with a fault (slow, an ECHO lost, a DFS target down, a replica without the path)
  %3d  unreachable (the server, or every DFS target), or the share or the path is missing (or not a directory)
  %3d  bad usage, or a bad credentials file
  %3d  the server refused the credentials, or access to the share
  %3d  interrupted

Flags:
`, EnvUsername, EnvPassword, EnvDomain, ExitHealthy, ExitDegraded, ExitUnreachable, ExitUsage, ExitDenied, ExitInterrupted)
		printFlags(fs, w)
	}
}

// probeFlags are the probe's settings.
type probeFlags struct {
	credentials string
	opts        probe.Options
	json        bool
	watch       bool
	watchFor    time.Duration
	watchOpts   probe.WatchOptions
}

func runProbe(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var f probeFlags
	fs.StringVar(&f.credentials, "credentials", "", "a mount.cifs credentials file (username=, password=, domain=)")
	fs.DurationVar(&f.opts.Timeout, "timeout", 5*time.Second, "bound on each step: a session setup, an ECHO, a referral, a stat")
	fs.IntVar(&f.opts.Count, "count", 5, "SMB2 ECHOs per server (1-1000)")
	fs.DurationVar(&f.opts.Interval, "interval", 200*time.Millisecond, "pause between ECHOs")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON (with --watch: then one JSON object per line per event)")
	fs.BoolVar(&f.watch, "watch", false, "after the report, stream the directory's changes (SMB2 CHANGE_NOTIFY) until interrupted")
	fs.DurationVar(&f.watchFor, "watch-for", 0, "with --watch: stop after this long (0: until interrupted)")
	fs.BoolVar(&f.watchOpts.Recursive, "recursive", false, "with --watch: the whole subtree, not only the directory's own entries")
	fs.DurationVar(&f.watchOpts.KeepAlive, "keepalive", 5*time.Second, "with --watch: how often the directory is opened again, to tell a dead server or a removed directory from a quiet one")
	pos, code, ok := parse(fs, args, probeUsage(fs), env)
	if !ok {
		return code
	}
	switch {
	case len(pos) != 1:
		return usageError(env, "probe", "want one //server/share[/path]")
	case f.opts.Timeout <= 0 || f.opts.Interval <= 0:
		return usageError(env, "probe", "--timeout and --interval must be positive")
	case f.opts.Count < 1 || f.opts.Count > 1000:
		return usageError(env, "probe", "--count must be 1 to 1000")
	case !f.watch && (f.watchFor != 0 || f.watchOpts.Recursive):
		return usageError(env, "probe", "--watch-for and --recursive go with --watch")
	case f.watchFor < 0 || f.watchOpts.KeepAlive <= 0:
		return usageError(env, "probe", "--watch-for must not be negative, --keepalive must be positive")
	}
	target, err := volume.ParseSource("target", pos[0])
	if err != nil {
		return usageError(env, "probe", err.Error())
	}
	creds, from, err := credentials(f.credentials, env.Getenv)
	if err != nil {
		return usageError(env, "probe", err.Error())
	}
	report := probe.Run(ctx, probe.Request{Target: target, Creds: creds, CredentialsFrom: from}, f.opts, env.Probe)
	if ctx.Err() != nil {
		fmt.Fprintln(env.Stderr, "csi-smb probe: interrupted")
		return ExitInterrupted
	}
	write := writeProbe
	if f.watch && f.json {
		write = writeJSONLine // JSON lines: the report, then the events
	}
	if err := write(env.Stdout, report, f.json); err != nil {
		fmt.Fprintf(env.Stderr, "csi-smb probe: %v\n", err)
	}
	if !f.watch {
		return probeExit(report.Verdict)
	}
	return watchProbe(ctx, report, creds, f, env)
}

// watchProbe follows the directory the report found: a line per change
// after the report (--json: the report as one line, then one per event).
// It ends on an interrupt (exit 130), after --watch-for (the report's exit
// code), or when the directory goes (exit 2) or access is refused (4).
func watchProbe(ctx context.Context, report probe.Report, creds auth.Credentials, f probeFlags, env Env) int {
	code := probeExit(report.Verdict)
	target, ok := report.WatchTarget()
	if !ok {
		fmt.Fprintf(env.Stderr, "csi-smb probe: nothing to watch: the path is not a directory the probe reached (exit %d)\n", code)
		return code
	}
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if f.watchFor > 0 {
		wctx, cancel = context.WithTimeout(ctx, f.watchFor)
	}
	defer cancel()
	f.watchOpts.Timeout = f.opts.Timeout
	enc := json.NewEncoder(env.Stdout)
	err := probe.Watch(wctx, target, creds, f.watchOpts, env.Probe, func(e probe.WatchEvent) {
		if f.json {
			_ = enc.Encode(e)
			return
		}
		renderWatchEvent(env.Stdout, e)
	})
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(env.Stderr, "csi-smb probe: interrupted")
		return ExitInterrupted
	case errors.Is(err, context.DeadlineExceeded):
		return code
	case errors.Is(err, smb.ErrAuth), errors.Is(err, smb.ErrAccessDenied):
		fmt.Fprintf(env.Stderr, "csi-smb probe: watch: %v\n", err)
		return ExitDenied
	}
	fmt.Fprintf(env.Stderr, "csi-smb probe: watch: %v\n", err)
	return ExitUnreachable
}

// probeExit maps a verdict to its exit code.
func probeExit(v probe.Verdict) int {
	switch v {
	case probe.Healthy:
		return ExitHealthy
	case probe.Degraded:
		return ExitDegraded
	case probe.Denied:
		return ExitDenied
	}
	return ExitUnreachable // Unreachable, Missing
}

// credentials are the file's, else the environment's, else none
// (anonymous), with where they came from.
func credentials(file string, getenv func(string) string) (auth.Credentials, string, error) {
	if file != "" {
		c, err := auth.ReadCredentialsFile(file)
		return c, "file", err
	}
	c := auth.Credentials{Username: getenv(EnvUsername), Password: getenv(EnvPassword), Domain: getenv(EnvDomain)}
	switch {
	case c.Username == "" && (c.Password != "" || c.Domain != ""):
		return auth.Credentials{}, "", errors.New(EnvPassword + " or " + EnvDomain + " is set without " + EnvUsername)
	case c.Username == "":
		return auth.Credentials{}, "none", nil
	}
	if i := strings.IndexAny(c.Username, `\/`); i >= 0 && c.Domain == "" {
		c.Domain, c.Username = c.Username[:i], c.Username[i+1:]
	}
	return c, "environment", nil
}

func writeProbe(w io.Writer, r probe.Report, asJSON bool) error {
	if !asJSON {
		return renderProbe(w, r)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeJSONLine(w io.Writer, r probe.Report, _ bool) error {
	if err := json.NewEncoder(w).Encode(r); err != nil {
		return fmt.Errorf("encode the report: %w", err)
	}
	return nil
}
