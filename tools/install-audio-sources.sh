#!/usr/bin/env bash
# Real audio for the demo corpus, from Debian packages (needs root; ~1 minute).
# The corpus builder works without them (it says which fallbacks it used), but the demo's
# evidence is about real recorded speech, synthesized voices and sampled instruments.
set -euo pipefail
pkgs=(asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
      asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav espeak-ng flite fluidsynth
      fluid-soundfont-gm sonic-pi-samples sound-theme-freedesktop oxygen-sounds)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "installed: ${pkgs[*]}"
