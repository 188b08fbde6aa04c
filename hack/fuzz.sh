#!/usr/bin/env bash
# fuzz.sh [DURATION]: runs every fuzz target in the module for DURATION each.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' pkg internal | xargs -n1 dirname | sort -u); do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    echo "fuzz: ./$dir $f ($t)"
    go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "./$dir" | tail -1
  done
done
