#!/usr/bin/env bash
# Installs Debian/Ubuntu packages that are missing, as root or through sudo.
# Usage: scripts/apt-install.sh PACKAGE...   (each given as `package:path-that-proves-it`)
set -euo pipefail
need=()
for spec in "$@"; do
  pkg=${spec%%:*}
  path=${spec#*:}
  [ -e "$path" ] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  run=()
elif command -v sudo >/dev/null; then
  run=(sudo)
else
  echo "apt-install: need root or sudo to install: ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${run[@]}" apt-get update -qq
"${run[@]}" apt-get install -y -qq "${need[@]}"
