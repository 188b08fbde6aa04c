package probe

import (
	"fmt"
	"time"
)

// ReportVersion is the version of the Report's JSON shape. Fields are
// only ever added to a version; a change of meaning gets a new one.
const ReportVersion = 1

// Verdict sums up a probe; the command maps it to its exit code.
type Verdict string

// Verdicts, from the best to the worst.
const (
	Healthy     Verdict = "healthy"     // everything checked answered as it should
	Degraded    Verdict = "degraded"    // usable, with a fault: slow, lost ECHOs, a DFS target down, a replica without the path
	Missing     Verdict = "missing"     // the share or the path does not exist (or is not a directory)
	Denied      Verdict = "denied"      // the server refused the credentials, or access to the share
	Unreachable Verdict = "unreachable" // the server, or every DFS target, does not answer
)

func (v Verdict) severity() int {
	switch v {
	case Degraded:
		return 1
	case Missing:
		return 2
	case Denied:
		return 3
	case Unreachable:
		return 4
	}
	return 0
}

// Report is what a probe found. Its JSON form (csi-smb probe --json) is a
// stable interface, documented in docs/operations.md; it never carries a
// password.
type Report struct {
	Version     int               `json:"version"` // ReportVersion
	Target      string            `json:"target"`  // //server/share[/path]
	Time        time.Time         `json:"time"`    // when the probe started
	TookMs      float64           `json:"tookMs"`
	Credentials CredentialsReport `json:"credentials"`
	Verdict     Verdict           `json:"verdict"`
	// Problems say why the verdict is not healthy, the worst first; empty
	// when healthy.
	Problems []string     `json:"problems"`
	Server   ServerReport `json:"server"` // the server the target names (for DFS: the namespace server)
	// DFS is the referral tree and every storage target, probed; null for
	// a path in no DFS namespace.
	DFS *DFSReport `json:"dfs"`
	// Share is the check of the path on the share; null for a DFS path
	// (each target has its own) and when the server does not answer.
	Share *ShareReport `json:"share"`
}

// CredentialsReport says who the probe logged on as; never the password.
type CredentialsReport struct {
	User   string `json:"user"`   // DOMAIN\user, user, or "anonymous"
	Source string `json:"source"` // where they came from: "file", "environment" or "none"
}

// Logon outcomes of a ServerReport.
const (
	LogonAccepted  = "accepted"  // the credentials were accepted
	LogonAnonymous = "anonymous" // no credentials: an anonymous session
	LogonRejected  = "rejected"  // refused; the server was then probed anonymously, if it allows that
)

// ServerReport is the probe of one SMB server: a probe session (go-smb2's
// NEGOTIATE, SESSION_SETUP and IPC$ tree connect), ECHOs on it, and the
// failure detector's verdict on them.
type ServerReport struct {
	Address   string `json:"address"`   // host:445
	Reachable bool   `json:"reachable"` // it answered SMB2 at least once
	Logon     string `json:"logon"`     // Logon*; "" when no answer came
	Error     string `json:"error,omitempty"`
	// Session is what the server said while the session was set up; null
	// when none could be.
	Session *SessionReport `json:"session"`
	Echo    EchoReport     `json:"echo"`
	Health  HealthReport   `json:"health"`
}

// SessionReport is how the server protects the probe session, as its
// answers said (pkg/smb.Security).
type SessionReport struct {
	Dialect           string `json:"dialect"`           // "2.0.2", "2.1", "3.0", "3.0.2", "3.1.1"
	SigningRequired   bool   `json:"signingRequired"`   // the server requires signing
	Signed            bool   `json:"signed"`            // this session's messages are signed
	SigningAlgorithm  string `json:"signingAlgorithm"`  // HMAC-SHA256, AES-CMAC, AES-GMAC
	EncryptionCapable bool   `json:"encryptionCapable"` // the server offers SMB3 encryption
	Cipher            string `json:"cipher,omitempty"`  // the 3.1.1 cipher chosen, e.g. AES-128-GCM
	Encrypted         bool   `json:"encrypted"`         // the server encrypts the whole session
	Guest             bool   `json:"guest"`             // the server made it a guest session
	Null              bool   `json:"null"`              // the server made it an anonymous (null) session
	DFS               bool   `json:"dfs"`               // the server is DFS-capable
	Answers           int    `json:"answers"`           // SMB2 answers read during the setup
	SignedAnswers     int    `json:"signedAnswers"`     // of which signed
}

// EchoReport is the round trips of the ECHOs sent.
type EchoReport struct {
	Sent     int       `json:"sent"`
	Answered int       `json:"answered"`
	RTTMs    []float64 `json:"rttMs"`  // of each answered ECHO, in order
	SRTTMs   float64   `json:"srttMs"` // the detector's smoothed round trip; 0 before a sample
}

// HealthReport is the failure detector's verdict (pkg/health).
type HealthReport struct {
	State   string `json:"state"`  // Healthy, Degraded, Unreachable, Unknown
	Reason  string `json:"reason"` // ServerReachable, ServerSlow, ProbeMissed, ServerUnreachable, NotProbedYet
	Message string `json:"message"`
}

// DFSReport is the DFS resolution of the target.
type DFSReport struct {
	Link string `json:"link"` // the DFS path prefix whose targets these are
	// Referrals are those fetched to resolve the path: roots, then links.
	Referrals []ReferralReport `json:"referrals"`
	// Targets are the storage targets of the whole path, in the order the
	// kernel tries them, each probed.
	Targets []TargetReport `json:"targets"`
	Error   string         `json:"error,omitempty"` // the resolution failed
}

// ReferralReport is one referral: a DFS root or link and its targets.
type ReferralReport struct {
	Path       string   `json:"path"` // the prefix it answers, \server\share[\link]
	Kind       string   `json:"kind"` // "root" (targets are root servers) or "link" (storage)
	TTLSeconds int64    `json:"ttlSeconds"`
	Targets    []string `json:"targets"`
}

// TargetReport is one storage target of a DFS path.
type TargetReport struct {
	Path   string       `json:"path"` // \server\share[\path]: the target path for the whole request
	Server ServerReport `json:"server"`
	Share  ShareReport  `json:"share"`
}

// Share statuses.
const (
	ShareOK           = "ok"              // the path is a directory
	ShareNotDirectory = "not-a-directory" // the path is a file
	SharePathMissing  = "path-missing"
	ShareMissing      = "share-missing"
	ShareDenied       = "denied" // credentials refused or access denied
	ShareUnreachable  = "unreachable"
	ShareError        = "error"
	ShareSkipped      = "skipped" // not checked: the server does not answer
)

// ShareReport is the check of the path on one share: a tree connect with
// the credentials and a stat, on a connection of its own.
type ShareReport struct {
	Address   string `json:"address"` // host:445
	Share     string `json:"share"`
	Path      string `json:"path"`   // slash-separated below the share root; "" is the root
	Status    string `json:"status"` // Share*
	Error     string `json:"error,omitempty"`
	Encrypted bool   `json:"encrypted"` // the share requires encryption (SMB2_SHAREFLAG_ENCRYPT_DATA)
	DFSRoot   bool   `json:"dfsRoot"`   // the share is a DFS root
}

// judge is the pure rule from what was seen to a verdict and its reasons.
func judge(r Report) (Verdict, []string) {
	j := &judgement{verdict: Healthy}
	if !j.server("server", r.Server) {
		return j.verdict, j.sorted()
	}
	if r.DFS != nil {
		j.dfs(*r.DFS)
	}
	if r.Share != nil {
		j.share(*r.Share, false)
	}
	return j.verdict, j.sorted()
}

type problem struct {
	v   Verdict
	msg string
}

type judgement struct {
	verdict  Verdict
	problems []problem
}

func (j *judgement) add(v Verdict, format string, args ...any) {
	if v.severity() > j.verdict.severity() {
		j.verdict = v
	}
	j.problems = append(j.problems, problem{v, fmt.Sprintf(format, args...)})
}

// sorted lists the problems the worst first, in the order seen otherwise.
func (j *judgement) sorted() []string {
	out := []string{}
	for sev := Unreachable.severity(); sev > 0; sev-- {
		for _, p := range j.problems {
			if p.v.severity() == sev {
				out = append(out, p.msg)
			}
		}
	}
	return out
}

// server judges one server; it reports whether the server answered.
func (j *judgement) server(what string, s ServerReport) bool {
	if !s.Reachable {
		j.add(Unreachable, "%s %s does not answer: %s", what, s.Address, firstOf(s.Error, s.Health.Message))
		return false
	}
	if s.Logon == LogonRejected {
		j.add(Denied, "%s %s refused the credentials: %s", what, s.Address, s.Error)
	}
	if s.Health.State == "Degraded" || s.Health.State == "Unreachable" {
		j.add(Degraded, "%s %s is %s (%s): %s", what, s.Address, s.Health.State, s.Health.Reason, s.Health.Message)
	}
	if lost := s.Echo.Sent - s.Echo.Answered; lost > 0 {
		j.add(Degraded, "%s %s: %d of %d ECHOs unanswered", what, s.Address, lost, s.Echo.Sent)
		if s.Session != nil && s.Session.Encrypted {
			j.add(Degraded, "%s %s encrypts the whole session, and the probe's own ECHOs and referral requests "+
				"(pkg/smb, as the node's prober sends them) are not encrypted: the server drops them, so the node "+
				"cannot watch this server closely either", what, s.Address)
		}
	}
	return true
}

func (j *judgement) dfs(d DFSReport) {
	if d.Error != "" {
		j.add(Degraded, "DFS resolution failed: %s", d.Error)
	}
	up, found := 0, 0
	for _, t := range d.Targets {
		if t.Server.Reachable {
			up++
			if t.Share.Status == ShareOK {
				found++
			}
		}
	}
	if len(d.Targets) > 0 && up == 0 {
		j.add(Unreachable, "no DFS target of %s answers", d.Link)
	}
	for _, t := range d.Targets {
		if !t.Server.Reachable {
			if up > 0 {
				j.add(Degraded, "DFS target %s does not answer: %s", t.Path, firstOf(t.Server.Error, t.Server.Health.Message))
			}
			continue
		}
		j.server("DFS target", t.Server)
		j.share(t.Share, found > 0)
	}
}

// share judges a path check. When the path was found elsewhere (on
// another DFS target: a replica), a fault here only degrades.
func (j *judgement) share(s ShareReport, elsewhere bool) {
	v := func(bad Verdict) Verdict {
		if elsewhere {
			return Degraded
		}
		return bad
	}
	where := fmt.Sprintf(`\\%s\%s`, hostOf(s.Address), s.Share)
	switch s.Status {
	case ShareOK, ShareSkipped:
	case ShareNotDirectory:
		j.add(v(Missing), "%q on %s is a file, not a directory", s.Path, where)
	case SharePathMissing:
		j.add(v(Missing), "%q does not exist on %s", s.Path, where)
	case ShareMissing:
		j.add(v(Missing), "%s: no such share", where)
	case ShareDenied:
		j.add(v(Denied), "%s: %s", where, s.Error)
	case ShareUnreachable:
		j.add(v(Unreachable), "%s does not answer a stat: %s", where, s.Error)
	default:
		j.add(Degraded, "%s: stat %q: %s", where, s.Path, s.Error)
	}
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
