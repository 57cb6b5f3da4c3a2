#!/usr/bin/env bash
# One run of lossfuse on a lent NVIDIA GPU: the adapters, the conformance suite on the GPU, and
# the benchmark suite with the PyTorch peer on CUDA, on every shape plus the GPU-sized ones,
# written as Markdown, JSON, CSV and SVG. Under 8 minutes on an H200.
#
# The GPU machine has an NVIDIA driver and PyTorch, but no network, no Vulkan loader and no Rust.
# So, on the build machine (here):
#   cargo build --release -p lossfuse-cli      # the binary to carry: target/release/lossfuse
#   bench/gpu/fetch-loader.sh                  # the loader's .deb files into .gl/ (git-ignored)
# and on the GPU machine, from the repository root, carrying target/release/lossfuse and .gl:
#   bench/gpu/run.sh --out "$OUT"
#
# --cpu runs the same steps on this machine's software Vulkan adapter (lavapipe) with small
# shapes and a few check cases, the peer on the CPU: the test of this script
# (tools/tests/gpu_script.rs).
#
# Options: --out DIR (default bench/gpu/out), --bin PATH (default target/release/lossfuse, or
# LOSSFUSE_BIN), --python PATH (the peer's Python, default python3, or PYTHON), --compile (time
# torch.compile too: minutes per shape, which the 8-minute budget has no room for), --cpu.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=bench/gpu/out
bin="${LOSSFUSE_BIN:-target/release/lossfuse}"
python="${PYTHON:-python3}"
cpu=0
compile=--peer-no-compile
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift ;;
        --bin) bin=$2; shift ;;
        --python) python=$2; shift ;;
        --compile) compile= ;;
        --cpu) cpu=1 ;;
        *) echo "run.sh: unknown option '$1' (see the comment at the top)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
log="$out/run.log"
: >"$log"
say() { echo "== $*" | tee -a "$log"; }
start=$SECONDS

if [ ! -x "$bin" ]; then
    echo "run.sh: no lossfuse binary at '$bin': build it with cargo build --release -p lossfuse-cli" >&2
    exit 2
fi

# The Vulkan loader: the machine's, else the carried .deb files unpacked into / (as root).
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        echo "run.sh: no Vulkan loader here and no .gl/*.deb to unpack: run bench/gpu/fetch-loader.sh on the build machine and carry .gl" >&2
        exit 2
    fi
    say "unpacking the carried Vulkan loader (.gl/*.deb)"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
# The NVIDIA driver's Vulkan and EGL manifests, where the container keeps them apart.
nv=/usr/local/nvidia/share
if [ -e "$nv/vulkan/icd.d/nvidia_icd.json" ] && [ -z "${VK_DRIVER_FILES:-}" ] && [ "$cpu" = 0 ]; then
    export VK_DRIVER_FILES="$nv/vulkan/icd.d/nvidia_icd.json"
fi
if [ -e "$nv/glvnd/egl_vendor.d/10_nvidia.json" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES="$nv/glvnd/egl_vendor.d/10_nvidia.json"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

say "adapters"
"$bin" adapters | tee "$out/adapters.txt" | tee -a "$log"

if [ "$cpu" = 1 ]; then
    adapter=vulkan
    check_cases=(--case classification/binary --case pair_wise_loss --case in_batch_softmax/dot)
    shapes=(--shape classification_64k --shape listwise_zipf_64k --shape pairwise_zipf_64k)
    bench_opts=(--steps 2 --warmup 1 --gpu-steps 1)
else
    adapter=nvidia
    check_cases=()
    shapes=()
    for s in $("$bin" bench --list | awk '{print $1}'); do shapes+=(--shape "$s"); done
    # Trainer tensors live on the GPU: with host inputs the PCIe upload would be what is timed.
    bench_opts=(--steps 10 --warmup 2 --gpu-steps 3 --time-budget 10 --device-inputs
        --reference-max-gflop 12)
fi

say "lossfuse check on '$adapter'"
check_status=0
"$bin" check -q --adapter "$adapter" "${check_cases[@]}" \
    --markdown "$out/check.md" --json "$out/check.json" 2>&1 | tee -a "$log" || check_status=$?

say "lossfuse bench on '$adapter' with the torch peer ($python)"
"$bin" bench -q --adapter "$adapter" "${shapes[@]}" "${bench_opts[@]}" \
    --peer "torch:$python" $compile \
    --json "$out/bench.json" --csv "$out/bench.csv" --plot "$out/bench.svg" \
    | tee "$out/bench.txt" | tee -a "$log"
{
    echo "# lossfuse bench on $(head -1 "$out/adapters.txt")"
    echo
    echo "$(date -u +%Y-%m-%d), \`bench/gpu/run.sh\`$([ "$cpu" = 1 ] && echo ' --cpu'); lossfuse $("$bin" --version | awk '{print $2}')."
    echo
    echo '```text'
    cat "$out/bench.txt"
    echo '```'
} >"$out/bench.md"
rm "$out/bench.txt"
say "done in $((SECONDS - start)) s: $(ls "$out" | tr '\n' ' ')"
exit "$check_status"
