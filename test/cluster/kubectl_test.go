//go:build cluster

package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tool runs kubectl or helm against the lab's API server.
type tool struct {
	bin        string
	kubeconfig string
}

// run runs the tool with args (and stdin, if not empty), bounded by limit.
func (c tool) run(limit time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s%s", c.bin, strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

// must runs the tool and fails the test on an error.
func (c tool) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(5*time.Minute, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply feeds manifest to kubectl apply -f -.
func (c tool) apply(t *testing.T, manifest string) {
	t.Helper()
	if _, err := c.run(2*time.Minute, manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// getJSON decodes kubectl get ... -o json into v; it reports errors instead
// of failing, for polling.
func (c tool) getJSON(v any, args ...string) error {
	out, err := c.run(30*time.Second, "", append(append([]string{"get"}, args...), "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// waitFor polls cond every 250 ms until it holds or limit passes, and
// returns how long that took. The last message of cond goes into a failure.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		if msg != "" {
			last = msg
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v; last: %s", what, limit, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// The few fields of Kubernetes objects the test reads.
type (
	condition struct {
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	podJSON struct {
		Metadata struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"metadata"`
		Status struct {
			Phase        string `json:"phase"`
			VolumeHealth []struct {
				Name       string      `json:"name"`
				Conditions []condition `json:"healthConditions"`
			} `json:"volumeHealth"`
		} `json:"status"`
	}
	eventList struct {
		Items []struct {
			Type           string `json:"type"`
			Reason         string `json:"reason"`
			Message        string `json:"message"`
			Count          int    `json:"count"`
			InvolvedObject struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"involvedObject"`
			Source struct {
				Component string `json:"component"`
				Host      string `json:"host"`
			} `json:"source"`
		} `json:"items"`
	}
)

// volumeConditions is what the kubelet wrote into pod.status.volumeHealth
// for the pod's volume vol.
func (p podJSON) volumeConditions(vol string) []condition {
	for _, v := range p.Status.VolumeHealth {
		if v.Name == vol {
			return v.Conditions
		}
	}
	return nil
}

func hasStatus(cs []condition, status string) bool {
	for _, c := range cs {
		if c.Status == status {
			return true
		}
	}
	return false
}
