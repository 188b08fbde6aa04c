package lab

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// Fault actions, as the smblab command and the guest control channel name them.
const (
	ActKill      = "kill"   // SIGKILL smbd and its children: connections are refused/reset
	ActStart     = "start"  // start a killed smbd again
	ActStop      = "stop"   // SIGSTOP smbd and its children: a frozen server, TCP alive
	ActCont      = "cont"   // SIGCONT: thaw
	ActPart      = "part"   // set the target's bridge port down: a black hole
	ActUnpart    = "unpart" // bring it back
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
	}
	s, err := l.Server(target)
	if err != nil {
		return err
	}
	switch action {
	case ActKill:
		pids := descendants(s.PID)
		_ = signalTree(s.PID, syscall.SIGCONT)
		if err := signalTree(s.PID, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %s: %w", target, err)
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
	return fmt.Errorf("unknown fault action %q (kill, start, stop, cont, part, unpart)", action)
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
