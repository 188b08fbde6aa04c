package diag

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sample() Status {
	return Status{Version: StatusVersion, Driver: "smb.csi-smb.io", Node: "n1", Volumes: []Volume{
		{ID: "v1", State: "Healthy", Reason: "VolumeHealthy", Message: "volume is healthy", Source: "//srv/share/v1",
			Server: "srv:445", ServerState: "Healthy", DFSTargets: []string{}, Staging: "/st/v1",
			LastCheck: time.Date(2026, 12, 2, 3, 4, 5, 600, time.UTC), CheckState: "MountHealthy"},
		{ID: "v2", State: "Degraded", Reason: "TargetUnreachable", Source: "//ns/dfs/link", Server: "ns:445",
			ServerState: "Healthy", DFSTarget: "10.0.0.2:445", DFSTargets: []string{"10.0.0.2:445", "10.0.0.3:445"}, Staging: "/st/v2"},
	}}
}

type fixed Status

func (f fixed) NodeStatus() Status { return Status(f) }

func TestEncodeDecode(t *testing.T) {
	s, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(s)
	if err != nil || !reflect.DeepEqual(got, sample()) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	empty, _ := Encode(Status{Version: StatusVersion})
	if got, err := Decode(empty); err != nil || got.Volumes == nil || len(got.Volumes) != 0 {
		t.Fatalf("no volumes: %+v %v", got, err)
	}
	// A newer node's extra fields are ignored.
	s.Fields["extra"] = structpb.NewBoolValue(true)
	s.Fields["volumes"].GetListValue().Values[0].GetStructValue().Fields["newField"] = structpb.NewNumberValue(3)
	if _, err := Decode(s); err != nil {
		t.Fatalf("unknown fields: %v", err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for name, mod := range map[string]func(s *structpb.Struct){
		"no version":      func(s *structpb.Struct) { delete(s.Fields, "version") },
		"version 2":       func(s *structpb.Struct) { s.Fields["version"] = structpb.NewNumberValue(2) },
		"node a number":   func(s *structpb.Struct) { s.Fields["node"] = structpb.NewNumberValue(1) },
		"volumes a map":   func(s *structpb.Struct) { s.Fields["volumes"] = structpb.NewStructValue(&structpb.Struct{}) },
		"volume a string": func(s *structpb.Struct) { s.Fields["volumes"].GetListValue().Values[0] = structpb.NewStringValue("x") },
		"bad time": func(s *structpb.Struct) {
			s.Fields["volumes"].GetListValue().Values[0].GetStructValue().Fields["lastCheck"] = structpb.NewStringValue("yesterday")
		},
		"target a bool": func(s *structpb.Struct) {
			s.Fields["volumes"].GetListValue().Values[1].GetStructValue().Fields["dfsTargets"].GetListValue().Values[0] = structpb.NewBoolValue(true)
		},
	} {
		s, _ := Encode(sample())
		mod(s)
		if st, err := Decode(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %+v, %v; want ErrMalformed", name, st, err)
		}
	}
}

// serve runs a gRPC server on a unix socket with the service registered
// (when src is set) and an interceptor that counts calls.
func serve(t *testing.T, src Source) (*grpc.ClientConn, *int) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	calls := new(int)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == NodeStatusMethod {
			*calls++
		}
		return h(ctx, req)
	}))
	if src != nil {
		Register(srv, src)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); srv.Stop(); <-done })
	return conn, calls
}

func TestNodeStatusOverGRPC(t *testing.T) {
	conn, calls := serve(t, fixed(sample()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := NodeStatus(ctx, conn)
	if err != nil || !reflect.DeepEqual(got, sample()) || *calls != 1 {
		t.Fatalf("NodeStatus = %+v, %v after %d intercepted calls", got, err, *calls)
	}
	bare, _ := serve(t, nil)
	if _, err := NodeStatus(ctx, bare); status.Code(err) != codes.Unimplemented {
		t.Fatalf("a server without the service: %v, want Unimplemented", err)
	}
}

// FuzzDecode: a hostile or broken plugin's answer is decoded or refused,
// never a panic; what is accepted encodes and decodes back the same.
func FuzzDecode(f *testing.F) {
	s, _ := Encode(sample())
	b, _ := proto.Marshal(s)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var s structpb.Struct
		if proto.Unmarshal(b, &s) != nil {
			return
		}
		st, err := Decode(&s)
		if err != nil {
			return
		}
		enc, err := Encode(st)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", st, err)
		}
		again, err := Decode(enc)
		if err != nil || !reflect.DeepEqual(again, st) {
			t.Fatalf("round trip of %+v = %+v, %v", st, again, err)
		}
	})
}
