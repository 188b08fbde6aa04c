package cli

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/csi-smb/csi-smb/pkg/probe"
)

// renderProbe writes the report for a person: one labelled line per
// finding, the verdict and its reasons last.
func renderProbe(w io.Writer, r probe.Report) error {
	b := bufio.NewWriter(w)
	line := func(label, format string, args ...any) {
		fmt.Fprintf(b, "%-12s %s\n", label, fmt.Sprintf(format, args...))
	}
	line("probe", "%s as %s (credentials: %s), %s", r.Target, r.Credentials.User, r.Credentials.Source, r.Time.Format("2006-01-02T15:04:05Z"))
	renderServer(line, "server", "  ", r.Server)
	switch {
	case r.DFS == nil && r.Server.Reachable:
		line("dfs", "not a DFS path")
	case r.DFS != nil:
		renderDFS(line, *r.DFS)
	}
	if r.Share != nil {
		line("share", "%s", shareLine(*r.Share))
	}
	line("verdict", "%s (exit %d) after %.0f ms", r.Verdict, probeExit(r.Verdict), r.TookMs)
	for _, p := range r.Problems {
		line("", "- %s", p)
	}
	return b.Flush()
}

type lineFunc func(label, format string, args ...any)

func renderServer(line lineFunc, label, indent string, s probe.ServerReport) {
	if !s.Reachable {
		line(label, "%s does not answer: %s", s.Address, s.Error)
		line(indent+"health", "%s (%s): %s", s.Health.State, s.Health.Reason, s.Health.Message)
		return
	}
	logon := "logon " + s.Logon
	if s.Logon == probe.LogonRejected {
		logon = "credentials REFUSED (probed anonymously instead): " + s.Error
	}
	line(label, "%s answers; %s", s.Address, logon)
	if ss := s.Session; ss != nil {
		line(indent+"session", "%s", sessionLine(*ss))
	}
	line(indent+"echo", "%s", echoLine(s.Echo))
	line(indent+"health", "%s (%s): %s", s.Health.State, s.Health.Reason, s.Health.Message)
}

func sessionLine(s probe.SessionReport) string {
	signing := "signing not required by the server"
	if s.SigningRequired {
		signing = "signing REQUIRED by the server"
	}
	if s.Signed {
		signing += ", session signed (" + s.SigningAlgorithm + ")"
	} else {
		signing += ", session unsigned"
	}
	signing += fmt.Sprintf(", %d of %d setup answers signed", s.SignedAnswers, s.Answers)
	enc := "encryption not offered"
	if s.EncryptionCapable {
		enc = "encryption offered (" + s.Cipher + ")"
	}
	if s.Encrypted {
		enc += ", session ENCRYPTED"
	} else {
		enc += ", session not encrypted"
	}
	kind := ""
	switch {
	case s.Guest:
		kind = "; a GUEST session"
	case s.Null:
		kind = "; an anonymous (null) session"
	}
	return fmt.Sprintf("SMB %s; %s; %s%s", s.Dialect, signing, enc, kind)
}

func echoLine(e probe.EchoReport) string {
	if e.Sent == 0 {
		return "none sent"
	}
	rtts := make([]string, len(e.RTTMs))
	for i, r := range e.RTTMs {
		rtts[i] = fmt.Sprintf("%.2f", r)
	}
	out := fmt.Sprintf("%d of %d answered", e.Answered, e.Sent)
	if len(rtts) > 0 {
		out += fmt.Sprintf(": %s ms; srtt %.2f ms", strings.Join(rtts, " "), e.SRTTMs)
	}
	return out
}

func renderDFS(line lineFunc, d probe.DFSReport) {
	if d.Error != "" {
		line("dfs", "resolution failed: %s", d.Error)
	} else {
		line("dfs", "link %s: %d storage target(s)", d.Link, len(d.Targets))
	}
	for _, ref := range d.Referrals {
		line("  referral", "%s: %s, ttl %ds -> %s", ref.Path, ref.Kind, ref.TTLSeconds, strings.Join(ref.Targets, ", "))
	}
	for i, t := range d.Targets {
		label := fmt.Sprintf("  target %d", i+1)
		line(label, "%s", t.Path)
		renderServer(line, "    server", "    ", t.Server)
		if t.Share.Status != probe.ShareSkipped {
			line("    share", "%s", shareLine(t.Share))
		}
	}
}

func shareLine(s probe.ShareReport) string {
	path := fmt.Sprintf("path %q", s.Path)
	if s.Path == "" {
		path = "(the share root)"
	}
	out := fmt.Sprintf(`\\%s\%s %s: %s`, hostOf(s.Address), s.Share, path, s.Status)
	if s.Error != "" {
		out += ": " + s.Error
	}
	var flags []string
	if s.Encrypted {
		flags = append(flags, "the share requires encryption")
	}
	if s.DFSRoot {
		flags = append(flags, "a DFS root")
	}
	if len(flags) > 0 {
		out += " (" + strings.Join(flags, ", ") + ")"
	}
	return out
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i > 0 {
		return addr[:i]
	}
	return addr
}

// renderWatchEvent writes one change a --watch saw: when, what, which
// name, and what a line about the watch itself means.
func renderWatchEvent(w io.Writer, e probe.WatchEvent) {
	line := fmt.Sprintf("%s %-12s %s", e.Time.Format("2006-01-02T15:04:05.000Z"), e.Kind, e.Name)
	if e.Note != "" {
		line = strings.TrimRight(line, " ") + " -- " + e.Note
	}
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}
