package driver

import (
	"context"
	"strings"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// noisy RPCs are polled by kubelet and sidecars; they log at a higher level.
func noisy(method string) bool {
	for _, m := range []string{"/Probe", "/NodeGetVolumeStats", "/NodeGetCapabilities", "/GetPluginInfo",
		"/NodeGetVolumeHealth", "/NodeGetStorageHealth", "/ControllerGetVolumeHealth", "/ControllerListVolumeHealth",
		"/ControllerGetVolume", "/ListVolumes", "/NodeStatus"} {
		if strings.HasSuffix(method, m) {
			return true
		}
	}
	return false
}

// logInterceptor logs every call with secrets stripped (protosanitizer
// replaces every field marked csi_secret) and its outcome.
func logInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	v := klog.Level(4)
	if noisy(info.FullMethod) {
		v = 6
	}
	start := time.Now()
	klog.V(v).InfoS("gRPC call", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	took := time.Since(start)
	if err != nil {
		klog.ErrorS(err, "gRPC error", "method", info.FullMethod, "code", status.Code(err), "took", took)
		return resp, err
	}
	klog.V(v).InfoS("gRPC response", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp), "took", took)
	return resp, nil
}
