// Command csi-smb is the csi-smb CSI driver: controller, node or both.
// `csi-smb probe` and `csi-smb status` are the operators' subcommands
// (pkg/cli); without one, the arguments are the driver's flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/cli"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/plugin"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	if len(os.Args) > 1 && cli.IsCommand(os.Args[1]) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr})
		stop()
		os.Exit(code)
	}
	fs := flag.NewFlagSet("csi-smb", flag.ExitOnError)
	var opts driver.Options
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage:\n  csi-smb %-8s %s\n%s\nFlags:\n", "[flags]", "run the driver: controller, node or both", cli.Summary())
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("csi-smb", version)
		return
	}
	opts.Version = version
	if err := run(opts); err != nil {
		klog.ErrorS(err, "csi-smb failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// run runs the plugin until SIGTERM or SIGINT, then gives it
// --shutdown-timeout to stop (a DaemonSet rollout waits for the old pod,
// and the kubelet kills it after its grace period anyway); past that, or
// at a second signal, it returns without waiting.
func run(opts driver.Options) error {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := plugin.New(opts, plugin.Parts{})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case sig := <-signals:
		klog.InfoS("stopping", "signal", sig.String(), "timeout", opts.ShutdownTimeout)
	}
	cancel()
	timer := time.NewTimer(opts.ShutdownTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		klog.InfoS("stopped")
		return err
	case <-timer.C:
		return fmt.Errorf("not stopped %s after the signal: exiting anyway", opts.ShutdownTimeout)
	case sig := <-signals:
		return fmt.Errorf("second signal %s while stopping: exiting anyway", sig)
	}
}
