package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Up creates the namespaces, the bridge and the three Samba servers. It fails
// if a lab is already up in l.Dir; call Down first.
func (l *Lab) Up(ctx context.Context) (err error) {
	if _, err := os.Stat(filepath.Join(l.Dir, stateFile)); err == nil {
		return fmt.Errorf("a lab is already up in %s (run: smblab down)", l.Dir)
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return fmt.Errorf("lab dir: %w", err)
	}
	defer func() {
		if err != nil {
			_ = l.Down(context.WithoutCancel(ctx))
		}
	}()
	if err := l.save(); err != nil {
		return err
	}
	if err := ensureUser(ctx); err != nil {
		return err
	}
	if err := l.network(ctx); err != nil {
		return err
	}
	for _, s := range l.Servers {
		if err := l.configure(ctx, s); err != nil {
			return err
		}
		if err := l.Start(ctx, s.Name); err != nil {
			return err
		}
	}
	return nil
}

func ensureUser(ctx context.Context) error {
	if _, err := user.Lookup(User); err == nil {
		return nil
	}
	return run(ctx, "useradd", "-M", "-s", "/usr/sbin/nologin", User)
}

// network builds the bridge namespace and attaches every server and the client.
func (l *Lab) network(ctx context.Context) error {
	br := l.BridgeNS()
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", bridge, "type", "bridge"},
		{"-n", br, "link", "set", bridge, "up"},
	}
	type end struct{ ns, name, ip string }
	ends := []end{{l.ClientNS(), "vc", ClientIP}}
	for _, s := range l.Servers {
		ends = append(ends, end{s.Netns(l), "v" + s.Name, s.IP})
	}
	for _, e := range ends {
		port := e.name + "p"
		steps = append(steps,
			[]string{"netns", "add", e.ns},
			[]string{"-n", e.ns, "link", "set", "lo", "up"},
			[]string{"-n", br, "link", "add", port, "type", "veth", "peer", "name", e.name, "netns", e.ns},
			[]string{"-n", br, "link", "set", port, "master", bridge},
			[]string{"-n", br, "link", "set", port, "up"},
			[]string{"-n", e.ns, "addr", "add", e.ip + "/24", "dev", e.name},
			[]string{"-n", e.ns, "link", "set", e.name, "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

const smbConf = `[global]
  workgroup = WORKGROUP
  netbios name = %[1]s
  server role = standalone server
  interfaces = %[2]s
  bind interfaces only = yes
  smb ports = 445
  disable netbios = yes
  server min protocol = SMB2_10
  private dir = %[3]s/private
  lock directory = %[3]s/lock
  state directory = %[3]s/state
  cache directory = %[3]s/cache
  pid directory = %[3]s/pid
  ncalrpc dir = %[3]s/ncalrpc
  log file = %[3]s/log/log.%%m
  passdb backend = tdbsam:%[3]s/private/passdb.tdb
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  host msdfs = yes
  log level = 1
  include = %[3]s/extra.conf
`

const shareConf = `[%[1]s]
  path = %[2]s/shares/%[1]s
  read only = no
  force user = ` + User + `
`

// configure writes the instance's smb.conf, shares and password database.
func (l *Lab) configure(ctx context.Context, s *Server) error {
	for _, d := range []string{"private", "lock", "state", "cache", "pid", "ncalrpc", "log"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
	}
	conf := fmt.Sprintf(smbConf, strings.ToUpper("lab"+s.Name), s.IP, s.Dir)
	if err := os.WriteFile(s.ExtraConf(), nil, 0o644); err != nil { // global settings a test adds (SetExtraConf)
		return fmt.Errorf("configure %s: %w", s.Name, err)
	}
	for _, sh := range []string{"share", "shareA", "shareB", "dfs"} {
		dir := filepath.Join(s.Dir, "shares", sh)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
		who := fmt.Sprintf("I am %s on %s\n", sh, s.Name)
		if err := os.WriteFile(filepath.Join(dir, "whoami.txt"), []byte(who), 0o644); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
		conf += fmt.Sprintf(shareConf, sh, s.Dir)
		if sh == "dfs" {
			conf += "  msdfs root = yes\n"
		}
	}
	if s.Name == "n2" || s.Name == "n3" {
		ha := filepath.Join(l.Dir, HADir)
		if err := os.MkdirAll(ha, 0o777); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
		if err := os.Chmod(ha, 0o777); err != nil {
			return fmt.Errorf("configure %s: %w", s.Name, err)
		}
		conf += fmt.Sprintf("[ha]\n  path = %s\n  read only = no\n  force user = %s\n", ha, User)
	}
	if err := os.WriteFile(s.conf(), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("configure %s: %w", s.Name, err)
	}
	if s.Name == "n1" {
		for name, targets := range map[string]string{"multi": `10.213.0.2\shareA,10.213.0.3\shareA`, "ha": `10.213.0.2\ha,10.213.0.3\ha`} {
			if err := os.Symlink("msdfs:"+targets, filepath.Join(s.Dir, "shares", "dfs", name)); err != nil {
				return fmt.Errorf("dfs link %s: %w", name, err)
			}
		}
	}
	cmd := exec.CommandContext(ctx, "smbpasswd", "-c", s.conf(), "-s", "-a", User)
	cmd.Stdin = strings.NewReader(Password + "\n" + Password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("smbpasswd for %s: %w: %s", s.Name, err, out)
	}
	return nil
}

func (s *Server) conf() string { return filepath.Join(s.Dir, "smb.conf") }

// ExtraConf is included at the end of the server's [global] section: a test
// writes settings there (server signing = mandatory, ...) and restarts it.
func (s *Server) ExtraConf() string { return filepath.Join(s.Dir, "extra.conf") }

func (s *Server) logPath() string { return filepath.Join(s.Dir, "log", "smbd.stdout") }

// Start starts (or restarts after Kill) the smbd of server name and waits
// until it listens on port 445.
func (l *Lab) Start(ctx context.Context, name string) error {
	s, err := l.Server(name)
	if err != nil {
		return err
	}
	if alive(s.PID) {
		return fmt.Errorf("%s is already running (pid %d)", name, s.PID)
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	// ip netns exec execs smbd in place, so the PID is smbd's. setsid keeps
	// smbd's group-wide SIGTERM on shutdown away from us.
	cmd := exec.Command("ip", "netns", "exec", s.Netns(l), "/usr/sbin/smbd",
		"--foreground", "--no-process-group", "--debug-stdout", "-s", s.conf())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.PID = cmd.Process.Pid
	// No reaper goroutine: a killed smbd stays a zombie until this process
	// exits (alive() ignores zombies), and tests see no stray goroutine.
	_ = cmd.Process.Release()
	if err := l.save(); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for !listening(s.PID, s.IP, 445) {
		if !alive(s.PID) {
			return fmt.Errorf("smbd %s exited at start; see %s", name, logf.Name())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("smbd %s not listening on %s:445 after 15s", name, s.IP)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start %s: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Down stops every process of the lab by PID, deletes its namespaces and its
// directory. It is safe to call on a partial or absent lab.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	if err := l.ClusterDown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := l.KubeDown(ctx); err != nil {
		errs = append(errs, err)
	}
	var pids []int
	for _, s := range l.Servers {
		if alive(s.PID) {
			pids = append(pids, descendants(s.PID)...)
			// A frozen smbd must be thawed to die cleanly.
			_ = signalTree(s.PID, syscall.SIGCONT)
			_ = signalTree(s.PID, syscall.SIGKILL)
		}
		// samba-dcerpcd (spawned on demand) outlives smbd; it carries our conf path.
		for _, p := range pidsWithArg(s.conf()) {
			pids = append(pids, p)
			_ = syscall.Kill(p, syscall.SIGCONT)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitGone(wctx, pids); err != nil {
		errs = append(errs, err)
	}
	nss := []string{l.ClientNS(), l.BridgeNS()}
	for _, s := range l.Servers {
		nss = append(nss, s.Netns(l))
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", l.Dir, err))
		}
	}
	return errors.Join(errs...)
}
