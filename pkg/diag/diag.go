// Package diag is the node plugin's diagnostics service,
// csismb.diag.v1.Diagnostics, served on the CSI socket next to the CSI
// services: NodeStatus lists every volume the node has staged with the
// health the node has already judged. CSI has no call that lists staged
// volumes with that detail.
//
// There is no .proto and no generated code: the service is a hand-written
// grpc.ServiceDesc whose request is google.protobuf.Empty and whose
// response is a google.protobuf.Struct, carried by gRPC's standard proto
// codec. The Struct's shape is Status, versioned by its "version" field.
package diag

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Names on the wire.
const (
	ServiceName = "csismb.diag.v1.Diagnostics"
	// NodeStatusMethod is the full method name of NodeStatus.
	NodeStatusMethod = "/" + ServiceName + "/NodeStatus"
	// StatusVersion is the version of Status's shape.
	StatusVersion = 1
)

// Status is the node's view of its volumes. Its JSON form (csi-smb status
// --json) is documented in docs/operations.md; it never carries a secret.
type Status struct {
	Version int      `json:"version"` // StatusVersion
	Driver  string   `json:"driver"`  // the CSI driver name
	Node    string   `json:"node"`    // the node ID
	Volumes []Volume `json:"volumes"` // by volume ID
}

// Volume is one staged volume as the node sees it.
type Volume struct {
	ID      string `json:"volumeID"`
	State   string `json:"state"`  // Healthy, Degraded, Unreachable (inaccessible), Unknown
	Reason  string `json:"reason"` // CamelCase, as in the volume's Events and health RPCs
	Message string `json:"message"`
	// Source is //server/share[/path] as staged; empty for a volume
	// adopted after a restart (its mount is watched, its source unknown).
	Source string `json:"source"`
	// Server is the server the volume is on: the source's (for DFS the
	// namespace's), or the mount's address for an adopted volume.
	Server      string `json:"server"`
	ServerState string `json:"serverState"` // the prober's verdict on the server the mount uses
	// DFSTarget is the DFS target the mount uses now (host:port), and
	// DFSTargets every target of its link; empty when not on DFS.
	DFSTarget  string    `json:"dfsTarget"`
	DFSTargets []string  `json:"dfsTargets"`
	Staging    string    `json:"stagingPath"`
	LastCheck  time.Time `json:"lastCheck"`   // the last mount check (statfs); zero if none yet
	CheckState string    `json:"checkReason"` // its outcome: MountHealthy, MountStalled, MountStale, ...
}

// Source is what NodeStatus reads: the node's memory of its volumes and
// the health store. It must not block or do I/O, and must not change
// anything: the call is a pure read.
type Source interface {
	NodeStatus() Status
}

// server is what Register hands to gRPC.
type server struct{ src Source }

// handler is the HandlerType the descriptor names: gRPC checks that what
// is registered implements it.
type handler interface {
	nodeStatus(ctx context.Context, _ *emptypb.Empty) (*structpb.Struct, error)
}

var _ handler = server{}

func (s server) nodeStatus(context.Context, *emptypb.Empty) (*structpb.Struct, error) {
	return Encode(s.src.NodeStatus())
}

// Register adds the Diagnostics service, answered from src, to s.
func Register(s grpc.ServiceRegistrar, src Source) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*handler)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "NodeStatus", Handler: nodeStatusHandler}},
		Metadata:    "csismb/diag/v1 (hand-written, no .proto)",
	}, server{src: src})
}

// nodeStatusHandler is what protoc-gen-go-grpc would generate: decode the
// request, then run the handler through the server's interceptor.
func nodeStatusHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(emptypb.Empty)
	if err := dec(in); err != nil {
		return nil, err
	}
	h, ok := srv.(handler)
	if !ok {
		return nil, fmt.Errorf("diagnostics service registered with a %T", srv)
	}
	if interceptor == nil {
		return h.nodeStatus(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: NodeStatusMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		e, _ := req.(*emptypb.Empty)
		return h.nodeStatus(ctx, e)
	})
}

// NodeStatus asks the node plugin at the other end of cc. The call is
// bounded by ctx.
func NodeStatus(ctx context.Context, cc grpc.ClientConnInterface) (Status, error) {
	out := new(structpb.Struct)
	if err := cc.Invoke(ctx, NodeStatusMethod, &emptypb.Empty{}, out); err != nil {
		return Status{}, fmt.Errorf("%s: %w", NodeStatusMethod, err)
	}
	return Decode(out)
}

// ErrMalformed: a Struct that is not a Status of a version this client
// reads.
var ErrMalformed = errors.New("malformed node status")
