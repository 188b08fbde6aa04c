package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/csi-smb/csi-smb/pkg/diag"
	"github.com/csi-smb/csi-smb/pkg/driver"
)

func statusUsage(fs *flag.FlagSet) func(io.Writer) {
	return func(w io.Writer) {
		fmt.Fprintf(w, `Usage: csi-smb status [flags]

Every volume staged on this node, with its health, server, active DFS target and last mount check, as the RUNNING
node plugin has judged them: it asks the plugin over its CSI socket (the %s service), which answers
from memory. Nothing is probed, mounted or changed. Run it where the socket is, e.g.
  kubectl -n kube-system exec ds/csi-smb-node -c csi-smb -- /csi-smb status
Text for people, --json for scripts (docs/operations.md).

Exit codes:
  %3d  every volume is healthy (or none is staged)
  %3d  a volume is degraded or not judged yet, none inaccessible
  %3d  a volume is inaccessible (its server unreachable, its mount wedged or stale, no DFS target left)
  %3d  bad usage
  %3d  the node plugin could not be asked: no socket, not a node plugin, or no answer within --timeout

Flags:
`, diag.ServiceName, ExitHealthy, ExitDegraded, ExitUnreachable, ExitUsage, ExitNoPlugin)
		printFlags(fs, w)
	}
}

func runStatus(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	endpoint := fs.String("endpoint", driver.DefaultOptions().Endpoint, "the node plugin's CSI endpoint: unix:///path or tcp://host:port")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the call")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	pos, code, ok := parse(fs, args, statusUsage(fs), env)
	switch {
	case !ok:
		return code
	case len(pos) != 0:
		return usageError(env, "status", "takes no arguments")
	case *timeout <= 0:
		return usageError(env, "status", "--timeout must be positive")
	}
	target, err := grpcTarget(*endpoint)
	if err != nil {
		return usageError(env, "status", err.Error())
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return usageError(env, "status", err.Error())
	}
	defer func() { _ = conn.Close() }()
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := diag.NodeStatus(cctx, conn)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(env.Stderr, "csi-smb status: interrupted")
		return ExitInterrupted
	case status.Code(err) == codes.Unimplemented:
		fmt.Fprintf(env.Stderr, "csi-smb status: the plugin at %s does not serve %s: a controller, or a version before it\n",
			*endpoint, diag.ServiceName)
		return ExitNoPlugin
	case err != nil:
		fmt.Fprintf(env.Stderr, "csi-smb status: cannot ask the node plugin at %s: %v\n", *endpoint, err)
		return ExitNoPlugin
	}
	if err := writeStatus(env.Stdout, st, *asJSON, env.Now()); err != nil {
		fmt.Fprintf(env.Stderr, "csi-smb status: %v\n", err)
	}
	return statusExit(st)
}

// grpcTarget turns a CSI endpoint into a gRPC target.
func grpcTarget(endpoint string) (string, error) {
	network, addr, err := driver.ParseEndpoint(endpoint)
	if err != nil {
		return "", err
	}
	if network == "unix" {
		return "unix:" + addr, nil
	}
	return "passthrough:///" + addr, nil
}

// statusExit: inaccessible beats degraded beats healthy.
func statusExit(st diag.Status) int {
	code := ExitHealthy
	for _, v := range st.Volumes {
		switch v.State {
		case "Healthy":
		case "Unreachable":
			return ExitUnreachable
		default: // Degraded, Unknown
			code = ExitDegraded
		}
	}
	return code
}

func writeStatus(w io.Writer, st diag.Status, asJSON bool, now time.Time) error {
	if asJSON {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return fmt.Errorf("encode the status: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	bad := 0
	for _, v := range st.Volumes {
		if v.State != "Healthy" {
			bad++
		}
	}
	if _, err := fmt.Fprintf(w, "node %s, driver %s: %d volume(s), %d not healthy\n", st.Node, st.Driver, len(st.Volumes), bad); err != nil {
		return err
	}
	if len(st.Volumes) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tSTATE\tREASON\tSERVER\tDFS TARGET\tLAST CHECK")
	for _, v := range st.Volumes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.State, v.Reason, dash(v.Server), dash(v.DFSTarget), lastCheck(v.LastCheck, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, v := range st.Volumes {
		if v.State != "Healthy" {
			if _, err := fmt.Fprintf(w, "%s: %s: %s\n", v.ID, v.Reason, oneLine(v.Message)); err != nil {
				return err
			}
		}
	}
	return nil
}

func lastCheck(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
