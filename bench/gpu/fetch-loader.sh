#!/usr/bin/env bash
# On the build machine: downloads the Vulkan loader (and EGL/GL dispatch libraries) as amd64 .deb
# files into .gl/ at the repository root, for bench/gpu/run.sh to unpack on a GPU machine that has
# an NVIDIA driver but no loader. .gl/ is kept out of git (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >>.git/info/exclude
mkdir -p .gl /tmp/amd64/partial
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${o[@]}" update -qq
(cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
ls -l .gl
