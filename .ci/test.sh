#!/usr/bin/env bash
# Install neurochunk with its test extras, prepare the reference tools and services the tests use,
# then run the whole suite. The README's test command is `bash .ci/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# Each workload may add a .ci/setup-<name>.sh (reference environments, local services).
for setup in .ci/setup-*.sh; do
  [ -e "$setup" ] || continue
  echo "== $setup"
  bash "$setup"
done
exec python3 -m pytest -q -p no:cacheprovider "$@"
