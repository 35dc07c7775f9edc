#!/usr/bin/env bash
# Issue 7's services: a single-host Slurm on 127.0.0.1 (for the dask-jobqueue tests) and Debian's
# chromium (for the headless dashboard tests). Idempotent and quick once done. Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${NEUROCHUNK_SHARED:-../shared}
if [ "$(id -u)" != 0 ]; then
  echo "setup-slurm: not root, skipping (Slurm and chromium tests will skip)"; exit 0
fi
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if [ -x "$shared/hpc/start-local-slurm.sh" ] || [ -f "$shared/hpc/start-local-slurm.sh" ]; then
  bash "$shared/hpc/start-local-slurm.sh" >/dev/null
  sinfo -h -o '%P %T %c' | head -1 | sed 's/^/setup-slurm: /'
else
  echo "setup-slurm: $shared/hpc/start-local-slurm.sh not found; Slurm tests will skip"
fi
