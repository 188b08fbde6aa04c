// Command csi-smb is the csi-smb CSI driver: controller, node or both.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/plugin"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	fs := flag.NewFlagSet("csi-smb", flag.ExitOnError)
	var opts driver.Options
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	klog.InitFlags(fs)
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

func run(opts driver.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := plugin.New(opts, plugin.Parts{})
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
