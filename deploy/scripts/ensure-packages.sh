#!/usr/bin/env bash
# Install Debian/Ubuntu packages when the command they provide is missing.
# Usage: ensure-packages.sh COMMAND:PACKAGE|PACKAGE ...
# COMMAND:PACKAGE installs PACKAGE when COMMAND is neither on PATH nor in /usr/sbin (where Debian puts
# daemons such as mosquitto); a bare PACKAGE is installed when dpkg does not list it.
set -euo pipefail

missing=()
for entry in "$@"; do
  if [[ $entry == *:* ]]; then
    command_name=${entry%%:*}
    package=${entry#*:}
    if ! command -v "$command_name" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command_name" ]; then
      missing+=("$package")
    fi
  elif ! dpkg-query -W -f='${Status}' "$entry" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$entry")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "citywatch: please install these packages with your package manager: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)  # never prompt: a make target must not hang waiting for a password
else
  echo "citywatch: installing ${missing[*]} needs root; run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "citywatch: installing ${missing[*]} from the system packages"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
  # The package lists may be missing or stale on a fresh machine.
  if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; }; then
    echo "citywatch: could not install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
