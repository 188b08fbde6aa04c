// Package probecost measures what the health prober costs: 1,000 servers
// probed at 1 Hz. The servers are in-process SMB2 responders
// (internal/smbresponder, which speak enough SMB2 for the real client:
// NEGOTIATE, an anonymous session, a tree connect to IPC$, ECHO), run in a
// separate child process so that only the prober's CPU and memory are
// measured. Run: make bench/probecost.
package probecost

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"

	"github.com/csi-smb/csi-smb/internal/testrun"
)

const envServe = "CSI_SMB_PROBECOST_SERVE" // set in the child: serve this many responders

func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv(envServe)); err == nil {
		serve(n)
		return
	}
	os.Exit(m.Run())
}

// serve listens on n loopback ports, prints them, and answers until stdin closes.
func serve(n int) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := smbresponder.New(smbresponder.Options{})
	out := bufio.NewWriter(os.Stdout)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(out, l.Addr().String())
		go func() { _ = srv.Serve(ctx, l) }()
	}
	fmt.Fprintln(out, "ready")
	_ = out.Flush()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // parent closes stdin to stop us
	cancel()
}

// BenchmarkProber1000 probes 1,000 servers at 1 Hz for the benchmark time
// (default 60 s steady state after all sessions are up) and reports the
// prober process's CPU (percent of one core) and resident memory.
func BenchmarkProber1000(b *testing.B) {
	const servers = 1000
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), envServe+"="+strconv.Itoa(servers))
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = child.Wait() }()
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		addrs = append(addrs, sc.Text())
	}
	if len(addrs) != servers {
		b.Fatalf("child served %d responders", len(addrs))
	}
	rec := &rttRecorder{}
	store := health.NewStore()
	p := health.NewProber(health.Adapt(smb.ProbeDialer{}.DialProbe), store, health.ProberOptions{Recorder: rec})
	for _, a := range addrs {
		p.Acquire(a, auth.Credentials{})
	}
	testrun.Background(b, p.Run)
	deadline := time.Now().Add(2 * time.Minute)
	for healthyCount(store) < servers {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d servers healthy after 2 min", healthyCount(store), servers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(5 * time.Second) // past the connection storm
	window := 60 * time.Second
	if s := os.Getenv("CSI_SMB_PROBECOST_WINDOW"); s != "" {
		window, _ = time.ParseDuration(s)
	}
	rec.start()
	b.ResetTimer()
	cpu0, t0 := cpuTime(b), time.Now()
	time.Sleep(window)
	cpu, wall := cpuTime(b)-cpu0, time.Since(t0)
	b.StopTimer()
	if n := healthyCount(store); n != servers {
		b.Fatalf("%d of %d servers healthy at the end", n, servers)
	}
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
	b.ReportMetric(float64(rssKiB(b))/1024, "rss-MiB")
	b.ReportMetric(float64(servers), "servers")
	// Probes that share a wake-up must not distort each other's RTT.
	rtts, misses := rec.results()
	b.ReportMetric(float64(quantile(rtts, 50).Microseconds()), "rtt-p50-µs")
	b.ReportMetric(float64(quantile(rtts, 99).Microseconds()), "rtt-p99-µs")
	b.ReportMetric(float64(len(rtts)), "echoes")
	b.ReportMetric(float64(misses), "misses")
}

// rttRecorder keeps every probe's RTT from start on.
type rttRecorder struct {
	mu     sync.Mutex
	on     bool
	rtts   []time.Duration
	misses int
}

func (r *rttRecorder) start() { r.mu.Lock(); r.on = true; r.mu.Unlock() }

func (r *rttRecorder) ProbeObserved(_ string, o health.Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.on:
	case o.Outcome == health.Success:
		r.rtts = append(r.rtts, o.RTT)
	default:
		r.misses++
	}
}

func (r *rttRecorder) results() ([]time.Duration, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return slices.Clone(r.rtts), r.misses
}

func quantile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)-1)*q/100]
}

func healthyCount(store *health.Store) int {
	n := 0
	for _, v := range store.Servers() {
		if v.State == health.StateHealthy {
			n++
		}
	}
	return n
}

// cpuTime is this process's user+system time from /proc/self/stat.
func cpuTime(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw)[strings.LastIndexByte(string(raw), ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func rssKiB(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
