package httpserve

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHealthz(t *testing.T) {
	var broken error
	h := Healthz(func(context.Context) error { return nil }, func(context.Context) error { return broken })
	get := func(method string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(http.MethodGet); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	broken = errors.New("mount.cifs missing")
	if code, body := get(http.MethodGet); code != http.StatusServiceUnavailable || !strings.Contains(body, "mount.cifs missing") {
		t.Errorf("unhealthy: %d %q", code, body)
	}
	if code, _ := get(http.MethodPost); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", code)
	}
}

// TestServeStops: Serve answers until its context ends, then returns nil
// and leaves no goroutine behind (goleak in TestMain).
func TestServeStops(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", Healthz())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ServeListener(ctx, lis, mux) }()
	resp, err := http.Get("http://" + lis.Addr().String() + "/healthz")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}
}

func TestServeBadAddress(t *testing.T) {
	if err := Serve(context.Background(), "256.0.0.1:1", Healthz()); err == nil {
		t.Fatal("Serve on a bad address returned nil")
	}
}
