// Package testrun starts a component's Run for the length of a test.
package testrun

import (
	"context"
	"testing"
)

// Background runs run until the test ends, then cancels it, waits for it
// and fails the test if it returned an error.
func Background(tb testing.TB, run func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
}
