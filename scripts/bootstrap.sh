#!/usr/bin/env bash
# Install the system packages Play Bach needs, where they are missing (Debian/Ubuntu, as root or
# with sudo). Idempotent and quick when everything is there: `make` runs it every time.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so\.3' || need+=(libfluidsynth3)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
for extra in "$@"; do  # optional packages a target asks for, e.g. chromium for browser tests
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""
elif command -v sudo >/dev/null 2>&1; then sudo="sudo"
else
  echo "bootstrap: missing system packages: ${need[*]} (install them as root: apt-get install ${need[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: missing ${need[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
echo "bootstrap: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
