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
}

func runProbe(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var f probeFlags
	fs.StringVar(&f.credentials, "credentials", "", "a mount.cifs credentials file (username=, password=, domain=)")
	fs.DurationVar(&f.opts.Timeout, "timeout", 5*time.Second, "bound on each step: a session setup, an ECHO, a referral, a stat")
	fs.IntVar(&f.opts.Count, "count", 5, "SMB2 ECHOs per server (1-1000)")
	fs.DurationVar(&f.opts.Interval, "interval", 200*time.Millisecond, "pause between ECHOs")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
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
	// A streaming mode (--watch) would go on from here, on the same
	// targets, writing events after the report.
	if err := writeProbe(env.Stdout, report, f.json); err != nil {
		fmt.Fprintf(env.Stderr, "csi-smb probe: %v\n", err)
	}
	return probeExit(report.Verdict)
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
