package health

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func next(t *testing.T, sub *Subscription) (Update, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	u, err := sub.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return Update{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return u, true
}

func TestStoreSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewStore()
		s.SetServer("a:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
		sub := s.Subscribe()
		defer sub.Close()
		if u, ok := next(t, sub); !ok || u.Kind != KindServer || u.Name != "a:445" || u.Server.State != StateHealthy {
			t.Fatalf("a late subscriber must first get what exists: %+v %v", u, ok)
		}
		// A new message with the same state and reason is stored, not announced.
		s.SetServer("a:445", Verdict{State: StateHealthy, Reason: ReasonReachable, Message: "rtt 1ms"})
		if u, ok := next(t, sub); ok {
			t.Fatalf("no change of state or reason, yet %+v", u)
		}
		if v, _ := s.Server("a:445"); v.Message != "rtt 1ms" {
			t.Fatalf("Get = %+v, want the latest message", v)
		}
		// Changes of one entry coalesce; entries come in the order they changed.
		s.SetServer("a:445", Verdict{State: StateDegraded, Reason: ReasonProbeMissed})
		s.SetVolume("v1", VolumeVerdict{State: StateHealthy, Reason: ReasonVolumeHealthy})
		s.SetServer("a:445", Verdict{State: StateUnreachable, Reason: ReasonUnreachable})
		u, _ := next(t, sub)
		if u.Name != "a:445" || u.Server.State != StateUnreachable {
			t.Fatalf("first update %+v, want a:445 at its latest state", u)
		}
		if u, _ := next(t, sub); u.Kind != KindVolume || u.Name != "v1" {
			t.Fatalf("second update %+v, want v1", u)
		}
		if u, ok := next(t, sub); ok {
			t.Fatalf("a coalesced change came twice: %+v", u)
		}
		// A new remount request is a change even when state and reason stay.
		s.SetVolume("v1", VolumeVerdict{State: StateHealthy, Reason: ReasonVolumeHealthy, RemountWanted: time.Now()})
		if u, ok := next(t, sub); !ok || u.Volume.RemountWanted.IsZero() {
			t.Fatalf("remount request not delivered: %+v %v", u, ok)
		}
		s.DeleteVolume("v1")
		s.DeleteServer("a:445")
		for _, name := range []string{"v1", "a:445"} {
			if u, _ := next(t, sub); u.Name != name || !u.Gone {
				t.Fatalf("got %+v, want %s gone", u, name)
			}
		}
		if _, ok := s.Volume("v1"); ok {
			t.Fatal("deleted volume still there")
		}
	})
}

// TestStoreSlowConsumer: a consumer that does not read never blocks a
// producer, and finds the latest state when it does.
func TestStoreSlowConsumer(t *testing.T) {
	s := NewStore()
	sub := s.Subscribe()
	for i := range 100_000 {
		st := StateHealthy
		if i%2 == 1 {
			st = StateUnreachable
		}
		s.SetServer("a:445", Verdict{State: st})
		s.SetVolume("v", VolumeVerdict{State: st})
	}
	sub.Close()
	s.SetServer("a:445", Verdict{State: StateDegraded})
	if n := len(sub.order); n != 2 {
		t.Fatalf("%d pending updates, want one per entry", n)
	}
	u, _ := next(t, sub)
	if u.Server.State != StateDegraded {
		t.Fatalf("got %v, want the latest state", u.Server.State)
	}
}
