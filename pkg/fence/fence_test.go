package fence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// netns makes a fresh network namespace with lo up and returns its fd.
// The fence is tested on real sockets and the real nf_tables there.
func netns(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace") // make test runs as root
	}
	name := fmt.Sprintf("csismb-fence-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// in runs f on an OS thread that is in the namespace fd.
func in(t *testing.T, fd int, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		f()
	}()
	<-done
}

func listen(t *testing.T, fd int) net.Listener {
	t.Helper()
	var l net.Listener
	in(t, fd, func() {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:445"); err != nil {
			t.Error(err)
		}
	})
	if l == nil {
		t.FailNow()
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	return l
}

// dial connects to 127.0.0.1:445 in the namespace, with mark on the socket.
func dial(t *testing.T, fd int, mark uint32) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	var err error
	in(t, fd, func() {
		d := net.Dialer{Timeout: time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if cerr := rc.Control(func(s uintptr) { serr = unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) }); cerr != nil {
				return cerr
			}
			return serr
		}}
		c, err = d.Dial("tcp", "127.0.0.1:445")
	})
	return c, err
}

func refused(t *testing.T, fd int) bool {
	t.Helper()
	c, err := dial(t, fd, 0)
	if err == nil {
		_ = c.Close()
		return false
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial through the fence: %v, want ECONNREFUSED (a reset)", err)
	}
	return true
}

var lo = netip.MustParseAddr("127.0.0.1")

func TestFenceOnRealSockets(t *testing.T) {
	fd := netns(t)
	listen(t, fd)
	f := New(Options{NetNS: fd, TTL: time.Minute})
	if err := f.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if refused(t, fd) {
		t.Fatal("refused before any fence")
	}
	before, err := dial(t, fd, 0) // an established connection, like the kernel's cifs socket
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := f.Add(lo); err != nil {
		t.Fatal(err)
	}
	if !refused(t, fd) {
		t.Fatal("a new connection got through the fence")
	}
	marked, err := dial(t, fd, f.Mark())
	if err != nil {
		t.Fatalf("the prober's marked socket must pass the fence: %v", err)
	}
	_ = marked.Close()
	// The established connection is reset on its next send.
	_, _ = before.Write([]byte("x"))
	_ = before.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := before.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("established connection after the fence: %v, want ECONNRESET", err)
	}
	if got, err := f.Installed(); err != nil || len(got) != 1 || got[0] != lo {
		t.Fatalf("installed %v %v", got, err)
	}
	// A restart rebuilds the table: one table, two rules, no duplicates.
	g := New(Options{NetNS: fd})
	for range 2 {
		if err := g.Reconcile(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := g.conn()
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: "csi_smb", Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "output", Table: tbl})
	if err != nil || len(rules) != 2 {
		t.Fatalf("%d rules after two rebuilds (%v), want 2", len(rules), err)
	}
	if got, _ := g.Installed(); len(got) != 0 || refused(t, fd) {
		t.Fatalf("a rebuild by a process that fences nothing left %v", got)
	}
	if err := f.Add(lo); err != nil || !refused(t, fd) {
		t.Fatalf("fence again: %v", err)
	}
	if err := f.Remove(lo); err != nil || refused(t, fd) {
		t.Fatalf("after Remove: %v", err)
	}
}

// TestFenceExpiresWithoutItsOwner: a fence whose process is gone lifts
// after TTL; while Run refreshes it, it stays; Run's end removes the table.
func TestFenceExpiresWithoutItsOwner(t *testing.T) {
	fd := netns(t)
	listen(t, fd)
	crashed := New(Options{NetNS: fd, TTL: time.Second})
	if err := crashed.Add(lo); err != nil || !refused(t, fd) {
		t.Fatalf("fence: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // nobody refreshes it
	if refused(t, fd) {
		t.Fatal("fence still up after its TTL with nobody refreshing it")
	}
	f := New(Options{NetNS: fd, TTL: time.Second, Refresh: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	if err := f.Add(lo); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if !refused(t, fd) {
		t.Fatal("Run did not keep the fence up past its TTL")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if refused(t, fd) {
		t.Fatal("fence left after Run ended")
	}
	c, _ := f.conn()
	if tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet); len(tables) != 0 {
		t.Fatalf("%d tables left after Run ended", len(tables))
	}
}

// TestKill: the unmarked connection to the fenced address ends at once
// (ECONNABORTED, as for the kernel's cifs socket); the prober's marked one
// and connections elsewhere stay.
func TestKill(t *testing.T) {
	fd := netns(t)
	listen(t, fd)
	f := New(Options{NetNS: fd})
	victim, err := dial(t, fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	prober, err := dial(t, fd, f.Mark())
	if err != nil {
		t.Fatal(err)
	}
	defer prober.Close()
	other := New(Options{NetNS: fd, Port: 446})
	if n, err := other.Kill(lo); err != nil || n != 0 {
		t.Fatalf("kill on another port: %d, %v", n, err)
	}
	n, err := f.Kill(lo)
	if err != nil || n != 1 {
		t.Fatalf("Kill = %d, %v; want 1 connection ended", n, err)
	}
	_ = victim.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := victim.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("killed connection: %v, want ECONNABORTED", err)
	}
	if _, err := prober.Write([]byte("x")); err != nil {
		t.Fatalf("the prober's connection was ended too: %v", err)
	}
	_ = prober.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := prober.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("prober connection: %v, want it alive (a read timeout)", err)
	}
}

// TestRunRebuildsWhatACrashLeft: a fence left by a process that died is
// lifted when the next one starts, without waiting for its timeout.
func TestRunRebuildsWhatACrashLeft(t *testing.T) {
	fd := netns(t)
	listen(t, fd)
	crashed := New(Options{NetNS: fd, TTL: time.Hour})
	if err := crashed.Add(lo); err != nil || !refused(t, fd) {
		t.Fatalf("fence: %v", err)
	}
	f := New(Options{NetNS: fd})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for refused(t, fd) {
		if time.Now().After(deadline) {
			t.Fatal("the next process did not lift the fence a crashed one left")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
