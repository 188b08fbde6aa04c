// Package cli is the operators' side of the csi-smb binary: `csi-smb probe`
// (a one-shot diagnosis of a share, pkg/probe) and `csi-smb status` (the
// running node plugin's volumes, over its CSI socket, pkg/diag). It parses
// their flags, gathers credentials, renders text or JSON and chooses the
// exit code; main only dispatches to it. Without a subcommand the binary
// runs the driver, as before.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/csi-smb/csi-smb/pkg/probe"
)

// Exit codes, shared by both commands (documented in their --help and in
// docs/operations.md).
const (
	ExitHealthy     = 0   // everything checked is healthy
	ExitDegraded    = 1   // usable, with a fault
	ExitUnreachable = 2   // unreachable or inaccessible; or the share or path is missing
	ExitUsage       = 3   // bad flags or arguments, or a bad credentials file
	ExitDenied      = 4   // probe: the server refused the credentials, or access to the share
	ExitNoPlugin    = 5   // status: the node plugin could not be asked
	ExitInterrupted = 130 // SIGINT or SIGTERM before the answer
)

// Env is what a command reads and writes besides its arguments.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string // default os.Getenv
	// Probe is the probe's I/O; zero values get SMB over TCP.
	Probe probe.Deps
	// Now is the clock for "ago" in the status table; default time.Now.
	Now func() time.Time
}

func (e Env) withDefaults() Env {
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	return e
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, env Env) int
}

func commands() map[string]command {
	return map[string]command{
		"probe":  {"diagnose an SMB share as the node plugin would see it", runProbe},
		"status": {"list the volumes staged on this node with their health, from the running node plugin", runStatus},
	}
}

// IsCommand reports whether name is a subcommand (else the arguments are
// the driver's flags).
func IsCommand(name string) bool {
	_, ok := commands()[name]
	return ok
}

// Summary is one line per subcommand, for the driver's --help.
func Summary() string {
	var b strings.Builder
	for _, name := range []string{"probe", "status"} {
		fmt.Fprintf(&b, "  csi-smb %-8s %s (csi-smb %s --help)\n", name, commands()[name].summary, name)
	}
	return b.String()
}

// Run runs the subcommand args[0] with the rest of args and returns the
// process's exit code.
func Run(ctx context.Context, args []string, env Env) int {
	env = env.withDefaults()
	if len(args) == 0 || !IsCommand(args[0]) {
		fmt.Fprintf(env.Stderr, "csi-smb: want a subcommand:\n%s", Summary())
		return ExitUsage
	}
	return commands()[args[0]].run(ctx, args[1:], env)
}

// parse parses flags that may come before or after the positional
// arguments (flag stops at the first one), and returns those. -h and
// --help print usage to stdout: ok is false then, with code ExitHealthy.
func parse(fs *flag.FlagSet, args []string, usage func(io.Writer), env Env) (pos []string, code int, ok bool) {
	fs.SetOutput(io.Discard)
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			usage(env.Stdout)
			return nil, ExitHealthy, false
		}
		if err != nil {
			return nil, usageError(env, fs.Name(), err.Error()), false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func usageError(env Env, name, msg string) int {
	fmt.Fprintf(env.Stderr, "csi-smb %s: %s (csi-smb %s --help)\n", name, msg, name)
	return ExitUsage
}

// printFlags writes the flag defaults of fs to w.
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
