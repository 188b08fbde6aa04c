package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fault actions, as the smblab command and the guest control channel name them.
const (
	ActKill   = "kill"   // SIGKILL smbd and its children: connections are refused/reset
	ActStart  = "start"  // start a killed smbd again
	ActStop   = "stop"   // SIGSTOP smbd and its children: a frozen server, TCP alive
	ActCont   = "cont"   // SIGCONT: thaw
	ActPart   = "part"   // set the target's bridge port down: a black hole
	ActUnpart = "unpart" // bring it back
	// ActStopConn SIGSTOPs only the smbd child serving one client connection
	// (target "n3:PORT", PORT being the client's TCP port): that session
	// hangs while the server and its other connections stay healthy.
	ActStopConn  = "stopconn"
	ActContConn  = "contconn"
	TargetGuest  = "guest"  // partition target: the qemu guest's tap0
	TargetClient = "client" // partition target: the client namespace
)

// Fault applies action to target (n1..n3, guest, client).
func (l *Lab) Fault(ctx context.Context, action, target string) error {
	switch action {
	case ActStart:
		return l.Start(ctx, target)
	case ActPart, ActUnpart:
		return l.partition(ctx, target, action == ActPart)
	case ActStopConn, ActContConn:
		sig := syscall.SIGSTOP
		if action == ActContConn {
			sig = syscall.SIGCONT
		}
		return l.signalConn(target, sig)
	}
	s, err := l.Server(target)
	if err != nil {
		return err
	}
	switch action {
	case ActKill:
		if !alive(s.PID) {
			return fmt.Errorf("kill %s: smbd (pid %d) is not running; its log ends:\n%s", target, s.PID, tail(s.logPath(), 20))
		}
		pids := descendants(s.PID)
		_ = signalTree(s.PID, syscall.SIGCONT)
		if err := signalTree(s.PID, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %s: %w", target, err)
		}
		// samba-dcerpcd, spawned on demand, outlives smbd: a killed server
		// goes with all of its processes, and the next start is clean.
		for _, p := range pidsWithArg(s.conf()) {
			pids = append(pids, p)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := waitGone(wctx, pids); err != nil {
			return fmt.Errorf("kill %s: %w", target, err)
		}
		s.PID = 0
		return l.save()
	case ActStop:
		return signalTree(s.PID, syscall.SIGSTOP)
	case ActCont:
		return signalTree(s.PID, syscall.SIGCONT)
	}
	return fmt.Errorf("unknown fault action %q (kill, start, stop, cont, part, unpart, stopconn, contconn)", action)
}

func (l *Lab) partition(ctx context.Context, target string, down bool) error {
	var port string
	switch target {
	case TargetGuest:
		port = "tap0"
	case TargetClient:
		port = "vcp"
	default:
		s, err := l.Server(target)
		if err != nil {
			return err
		}
		port = s.Port()
	}
	state := "up"
	if down {
		state = "down"
	}
	return run(ctx, "ip", "-n", l.BridgeNS(), "link", "set", port, state)
}

// signalConn signals the smbd child that serves the client port named in
// target ("n3:40123"), found by matching the socket inodes of each child
// with its namespace's TCP table.
func (l *Lab) signalConn(target string, sig syscall.Signal) error {
	name, portStr, ok := strings.Cut(target, ":")
	port, err := strconv.Atoi(portStr)
	if !ok || err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("connection target %q: want SERVER:CLIENTPORT", target)
	}
	s, err := l.Server(name)
	if err != nil {
		return err
	}
	if !alive(s.PID) {
		return fmt.Errorf("%s is not running", name)
	}
	inode, err := connInode(s.PID, s.IP, port)
	if err != nil {
		return err
	}
	for _, pid := range descendants(s.PID)[1:] {
		if hasSocket(pid, inode) {
			if err := syscall.Kill(pid, sig); err != nil {
				return fmt.Errorf("signal smbd child %d: %w", pid, err)
			}
			return nil
		}
	}
	return fmt.Errorf("no smbd child of %s holds the connection from port %d", name, port)
}

// connInode finds the socket inode of the connection ip:445 <- *:port in
// the TCP table of pid's network namespace.
func connInode(pid int, ip string, port int) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "net", "tcp"))
	if err != nil {
		return "", fmt.Errorf("tcp table: %w", err)
	}
	local, remotePort := fmt.Sprintf("%s:%04X", hexIPv4(ip), 445), fmt.Sprintf(":%04X", port)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && strings.HasSuffix(f[2], remotePort) && f[9] != "0" {
			return f[9], nil
		}
	}
	return "", fmt.Errorf("no connection to %s:445 from port %d", ip, port)
}

func hasSocket(pid int, inode string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && link == want {
			return true
		}
	}
	return false
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
