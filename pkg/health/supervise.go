package health

import (
	"context"
	"sync"
)

// poke wakes whoever waits on wake, unless a wake-up is already pending.
func poke(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// supervise runs the Run loop shared by the Prober and the Monitor: each
// time wake fires (and once at the start) it calls spawnNew, which starts a
// goroutine, through spawn, for every item that has none yet. It returns
// when ctx ends, after every spawned goroutine has exited.
func supervise(ctx context.Context, wake <-chan struct{}, spawnNew func(spawn func(func()))) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	spawn := func(f func()) { wg.Go(f) }
	for {
		spawnNew(spawn)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}
