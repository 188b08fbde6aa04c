#!/usr/bin/env bash
# fuzz.sh [DURATION]: runs every fuzz target in the module for DURATION each.
# A target that fails prints its output's tail. A failure the fuzzer did not
# attribute to an input (no "Failing input written to": the fuzzing engine
# itself, e.g. a worker it lost on a loaded machine) is run once more; an
# input that fails the target fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' pkg internal | xargs -n1 dirname | sort -u); do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    for try in 1 2; do
      echo "fuzz: ./$dir $f ($t)"
      if go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "./$dir" >"$out" 2>&1; then
        tail -1 "$out"
        break
      fi
      tail -30 "$out"
      if grep -q 'Failing input written to' "$out" || [[ $try == 2 ]]; then
        echo "fuzz: ./$dir $f failed" >&2
        exit 1
      fi
      echo "fuzz: ./$dir $f: the fuzzing engine failed without a failing input; once more"
    done
  done
done
