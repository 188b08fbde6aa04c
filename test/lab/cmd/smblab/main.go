// Command smblab brings the test lab up and down, injects faults and boots the
// qemu guest. Run as root on Debian with samba, qemu and a kernel installed
// (hack/install-deps.sh).
//
//	smblab [-dir D] [-prefix P] up      (P: namespace names, default csismb-)
//	smblab [-dir D] [-prefix P] down
//	smblab [-dir D] fault kill|start|stop|cont|part|unpart n1|n2|n3|guest|client
//	smblab [-dir D] vm -share DIR -run PROGRAM [-timeout 20m] [-- args...]
//	smblab [-dir D] kube up [-apiserver PATH]
//	smblab [-dir D] kube down
//	smblab [-dir D] cluster up [-images DIR] [-pause REF] [-kube-bin DIR] [-memory MiB] [-timeout D]
//	smblab [-dir D] cluster down
//	smblab [-dir D] cluster kubectl [ARGS...]   (kubectl in the client namespace, lab kubeconfig)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/csi-smb/csi-smb/test/lab"
)

const usage = `usage: smblab [-dir D] [-prefix P] up | down | fault ACTION TARGET | vm -share DIR -run PROGRAM [-timeout D] [-- ARGS] | kube up [-apiserver PATH] | kube down | cluster up [-images DIR] [-pause REF] [-kube-bin DIR] [-memory MiB] [-timeout D] | cluster down | cluster kubectl ARGS`

func main() {
	fs := flag.NewFlagSet("smblab", flag.ExitOnError)
	dir := fs.String("dir", "/run/csi-smb-lab", "lab state directory (absolute)")
	prefix := fs.String("prefix", "csismb-", "namespace name prefix for up (later commands read it from the state)")
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *dir, *prefix, fs.Args())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "smblab:", err)
		var ee *lab.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.Code)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, prefix string, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "up":
		l, err := lab.NewWithPrefix(dir, prefix)
		if err != nil {
			return err
		}
		if err := l.Up(ctx); err != nil {
			return err
		}
		fmt.Printf("lab up in %s (namespaces %s*): smbd n1=10.213.0.1 n2=10.213.0.2 n3=10.213.0.3 (user %s)\n", l.Dir, l.Prefix, lab.User)
		return nil
	case "down":
		l, err := lab.Load(dir)
		if errors.Is(err, lab.ErrNotUp) {
			l, err = lab.NewWithPrefix(dir, prefix) // clean up namespaces left by a crashed run
		}
		if err != nil {
			return err
		}
		return l.Down(ctx)
	case "fault":
		if len(args) != 3 {
			return errors.New(usage)
		}
		l, err := lab.Load(dir)
		if err != nil {
			return err
		}
		return l.Fault(ctx, args[1], args[2])
	case "vm":
		l, err := lab.Load(dir)
		if err != nil {
			return err
		}
		return runVM(ctx, l, args[1:])
	case "kube":
		l, err := lab.Load(dir)
		if err != nil {
			return err
		}
		return runKube(ctx, l, args[1:])
	case "node-nat": // in the cluster's node (node.sh): the kubernetes Service without kube-proxy
		return lab.NodeServiceNAT()
	case "cluster":
		l, err := lab.Load(dir)
		if err != nil {
			return err
		}
		return runCluster(ctx, l, args[1:])
	}
	return errors.New(usage)
}

func runKube(ctx context.Context, l *lab.Lab, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("kube up", flag.ExitOnError)
		bin := fs.String("apiserver", lab.DefaultKubeBin, "kube-apiserver binary (hack/build-kube.sh)")
		_ = fs.Parse(args[1:])
		if fs.NArg() != 0 {
			return errors.New(usage)
		}
		start := time.Now()
		if err := l.KubeUp(ctx, *bin); err != nil {
			return err
		}
		fmt.Printf("kube-apiserver up at %s in %.1fs (etcd pid %d, kube-apiserver pid %d); kubeconfig %s\n",
			lab.KubeServer, time.Since(start).Seconds(), l.EtcdPID, l.APIServerPID, l.Kubeconfig())
		return nil
	case "down":
		if len(args) != 1 {
			return errors.New(usage)
		}
		return l.KubeDown(ctx)
	}
	return errors.New(usage)
}

func runVM(ctx context.Context, l *lab.Lab, args []string) error {
	fs := flag.NewFlagSet("vm", flag.ExitOnError)
	var opts lab.VMOptions
	fs.StringVar(&opts.Share, "share", "", "host directory shared with the guest as /host")
	fs.StringVar(&opts.Run, "run", "", "program to run in the guest, relative to -share")
	fs.DurationVar(&opts.Timeout, "timeout", 0, "kill the guest after this long (default 30m)")
	fs.IntVar(&opts.MemoryMiB, "memory", 0, "guest memory in MiB (default 1024)")
	_ = fs.Parse(args)
	opts.Args = fs.Args()
	opts.Console = os.Stdout
	return l.RunVM(ctx, opts)
}
