package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMergeOptions(t *testing.T) {
	tests := []struct {
		name    string
		user    []string
		want    []string
		wantErr string
	}{
		{name: "defaults", want: DefaultCIFSOptions},
		{name: "hard replaces soft", user: []string{"hard"}, want: []string{"vers=3.1.1", "echo_interval=5", "nosharesock", "nohandlecache", "hard"}},
		{name: "vers override", user: []string{"vers=3.0", "dir_mode=0777,file_mode=0777"}, want: []string{"soft", "echo_interval=5", "nosharesock", "nohandlecache", "vers=3.0", "dir_mode=0777", "file_mode=0777"}},
		{name: "later duplicate wins", user: []string{"uid=1", "uid=2"}, want: []string{"vers=3.1.1", "soft", "echo_interval=5", "nosharesock", "nohandlecache", "uid=2"}},
		{name: "handlecache back on", user: []string{"handlecache"}, want: []string{"vers=3.1.1", "soft", "echo_interval=5", "nosharesock", "handlecache"}},
		{name: "password refused", user: []string{"password=x"}, wantErr: "node-stage secret"},
		{name: "username refused in list", user: []string{"ro,username=admin"}, wantErr: "username"},
		{name: "credentials file refused", user: []string{"credentials=/etc/x"}, wantErr: "credentials"},
		{name: "bad key", user: []string{"a b"}, wantErr: "option names"},
		{name: "leading dash", user: []string{"-o"}, wantErr: "option names"},
		{name: "control char", user: []string{"iocharset=u\x01"}, wantErr: "control"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeOptions(DefaultCIFSOptions, tc.user)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want ErrInvalidOption with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("MergeOptions = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestCheckCreds(t *testing.T) {
	bad := []auth.Credentials{
		{Username: "a,b", Password: "Zq8-secret"},
		{Username: "u", Domain: "d=x", Password: "Zq8-secret"},
		{Username: "u", Password: "Zq8-line1\nline2"},
		{Username: "u", Password: strings.Repeat("x", 513)},
	}
	for _, c := range bad {
		if err := checkCreds(c); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("checkCreds(%q) = %v, want ErrInvalidOption", c.Username, err)
		}
		if err := checkCreds(c); err != nil && c.Password != "" && strings.Contains(err.Error(), c.Password) {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	if err := checkCreds(auth.Credentials{Username: "u", Password: "p,=!%"}); err != nil {
		t.Errorf("a password with , = ! %% must be accepted: %v", err)
	}
}

func TestHelperErrorErrno(t *testing.T) {
	for out, want := range map[string]syscall.Errno{
		"mount error(13): Permission denied\nRefer to the mount.cifs(8) manual": syscall.EACCES,
		"mount error(2): No such file or directory":                             syscall.ENOENT,
		"mount error(99999): x":                                                 0,
		"something else":                                                        0,
	} {
		e := &HelperError{Output: out}
		if got := e.Errno(); got != want {
			t.Errorf("Errno(%q) = %v, want %v", out, got, want)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/a\040b`: "/var/lib/a b",
		`/x\134y`:         `/x\y`,
		`/x\9`:            `/x\9`,
		`/end\04`:         `/end\04`,
		`/plain`:          "/plain",
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFindAndList(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	table := `22 1 0:21 / /proc rw,nosuid - proc proc rw
90 22 0:45 /pvc-1 /var/lib/kubelet/staging\040x rw,relatime - cifs //10.213.0.2/share/pvc-1 rw,vers=3.1.1,soft,addr=10.213.0.2
91 22 0:45 /pvc-1 /var/lib/kubelet/pods/p/mount ro,relatime - cifs //10.213.0.2/share/pvc-1 rw,vers=3.1.1,soft,addr=10.213.0.2
`
	if err := os.WriteFile(mi, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(Options{MountInfo: mi})
	info, ok, err := m.Find("/var/lib/kubelet/staging x/")
	if err != nil || !ok || info.FsType != "cifs" || info.Root != "/pvc-1" || info.ReadOnly() {
		t.Fatalf("Find staging = %+v %v %v", info, ok, err)
	}
	pub, ok, _ := m.Find("/var/lib/kubelet/pods/p/mount")
	if !ok || !pub.ReadOnly() || pub.Major != info.Major || pub.Minor != info.Minor {
		t.Fatalf("Find publish = %+v", pub)
	}
	if ok, _ := m.IsMountPoint("/var/lib/kubelet"); ok {
		t.Fatal("a parent of a mount is not a mount point")
	}
}

// TestRunKillsProcessGroup proves a hung helper and its children are
// SIGKILLed as a group when the context ends.
func TestRunKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, done, err := run(ctx, helper{path: "/bin/sh", args: []string{"-c", "sleep 60 & echo $! > " + pidFile + "; wait"}}, time.Second)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("run error = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("run took %v after its deadline", d)
	}
	<-done
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmtSscan(strings.TrimSpace(string(b)), &pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if state := procState(pid); state == "Z" || state == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the killed helper is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunReportsFailure(t *testing.T) {
	_, done, err := run(context.Background(), helper{path: "/bin/sh", args: []string{"-c", "echo 'mount error(2): No such file or directory'; exit 32"}}, time.Second)
	<-done
	var he *HelperError
	if !errors.As(err, &he) || he.Errno() != syscall.ENOENT {
		t.Fatalf("err = %v, want HelperError with ENOENT", err)
	}
}

// TestStatterSingleFlight: a statfs that hangs forever is started once per
// path however often it is asked for, callers return at their deadline, and
// the result reaches later callers once the syscall returns.
func TestStatterSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int32
		s := NewStatter(func(path string, st *unix.Statfs_t) error {
			calls.Add(1)
			<-release
			return unix.EHOSTDOWN
		})
		for range 50 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := s.Statfs(ctx, "/mnt/dead")
			cancel()
			if !errors.Is(err, ErrStatTimeout) {
				t.Fatalf("err = %v, want ErrStatTimeout", err)
			}
		}
		if calls.Load() != 1 || !s.InFlight("/mnt/dead") {
			t.Fatalf("statfs started %d times, want 1 in flight", calls.Load())
		}
		close(release)
		synctest.Wait()
		if s.InFlight("/mnt/dead") {
			t.Fatal("the call that returned is still in flight")
		}
		res, err := s.Statfs(context.Background(), "/mnt/dead")
		if err != nil || !errors.Is(res.Err, unix.EHOSTDOWN) || calls.Load() != 2 {
			t.Fatalf("next Statfs = %+v %v after %d calls, want a new call's EHOSTDOWN", res, err, calls.Load())
		}
	})
}

func TestStatterUsage(t *testing.T) {
	s := NewStatter(nil)
	res, err := s.Statfs(context.Background(), t.TempDir())
	if err != nil || res.Err != nil || res.Usage.TotalBytes <= 0 || res.Usage.AvailableBytes > res.Usage.TotalBytes {
		t.Fatalf("statfs of a temp dir = %+v, %v", res, err)
	}
}

func fmtSscan(s string, p *int) (int, error) { return fmt.Sscan(s, p) }

// procState returns the state letter of pid, "" if it is gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// TestUnmountReturnsOnceDetached: the kernel removes a mount from the table
// before it tears the superblock down in the umount process, which for a
// cifs mount on a dead server can block for tens of seconds. Unmount and
// Detach return as soon as the mount is gone; the helper is killed at
// UnmountTimeout and reaped.
func TestUnmountReturnsOnceDetached(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(*Mounter, context.Context, string) error
	}{
		{"Unmount", (*Mounter).Unmount},
		{"Detach", (*Mounter).Detach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mi := filepath.Join(dir, "mountinfo")
			table := "22 1 0:21 / /proc rw,nosuid - proc proc rw\n" +
				"90 22 0:45 /pvc-1 /staging rw,relatime - cifs //10.213.0.2/share/pvc-1 rw,soft\n"
			if err := os.WriteFile(mi, []byte(table), 0o600); err != nil {
				t.Fatal(err)
			}
			// The fake umount takes the mount out of the table, then hangs
			// in "teardown".
			fake := filepath.Join(dir, "umount")
			pidFile := filepath.Join(dir, "pid")
			script := "#!/bin/sh\necho $$ > " + pidFile + "\nsed -i '/ \\/staging /d' " + mi + "\nexec sleep 60\n"
			if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			m := New(Options{MountInfo: mi, Umount: fake, UnmountTimeout: time.Second, KillGrace: 500 * time.Millisecond})
			start := time.Now()
			if err := tc.call(m, context.Background(), "/staging"); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if took := time.Since(start); took > 500*time.Millisecond {
				t.Fatalf("%s took %v: it waited for the teardown", tc.name, took)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			// The helper is killed at UnmountTimeout and reaped: its PID is gone.
			for syscall.Kill(pid, 0) == nil {
				if took := time.Since(start); took > 3*time.Second {
					t.Fatalf("helper %d still there after %v, want it reaped at about UnmountTimeout", pid, took)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
