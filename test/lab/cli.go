package lab

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// RunCLI runs a csi-smb subcommand and returns its exit code and output. A
// command that could not run fails the test, and so does any output that
// carries the lab's password.
func RunCLI(t testing.TB, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	if strings.Contains(out.String()+errb.String(), Password) {
		t.Fatalf("%v printed the password", cmd.Args)
	}
	return code, out.String(), errb.String()
}
