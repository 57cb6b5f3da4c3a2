// The GPU checks of device-buffer inputs (docs/LOSSES.md, "State, and refused steps"): host
// tensors are checked before upload, but a trainer's own buffers are never read back, so each
// real input a term needs finite (and each sample-weight tensor, which must also be >= 0) is
// scanned here when it comes as a device buffer. The first bad element of each check is kept
// in its word of `aux` as 0xffffffff − index (so that the largest word is the first element;
// 0: none); `weigh` turns it into the step's status and clears it, and a flagged step commits
// no state.

//#import common.wgsl

struct ValueScan {
    chunk: Chunk,
    // The check's word in `aux`.
    slot: u32,
    // 1: NaN and ±Inf are bad.
    finite: u32,
    // 1: negative values (and ±Inf) are bad: sample weights.
    non_negative: u32,
}

@group(0) @binding(0) var<storage, read> scan: ValueScan;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> flags: array<atomic<u32>>;

// Elements per invocation: a workgroup scans WG · ITEMS consecutive elements, each invocation
// every WG-th of them (neighbouring invocations load neighbouring words). Few, long workgroups:
// on the software adapters a workgroup's start costs more than scanning 256 words.
const ITEMS: u32 = 16u; // @spec set by the plan (SCAN_ITEMS in src/plan/checks.rs)

@compute @workgroup_size(256)
fn scan_values(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    if (wg >= scan.chunk.wgs) {
        return;
    }
    let first = wg * WG * ITEMS + lid;
    let end = min(scan.chunk.rows, (wg + 1u) * WG * ITEMS);
    // Ascending, so the first bad element this invocation sees is its smallest.
    var bad_at = 0xffffffffu;
    for (var i = first; i < end; i = i + WG) {
        // By the bits: WGSL lets implementations assume floats are never NaN or infinite.
        let x = values[i];
        let bits = bitcast<u32>(x);
        let special = (bits & 0x7f800000u) == 0x7f800000u;
        let infinite = special && (bits & 0x007fffffu) == 0u;
        let negative = !special && x < 0.0;
        let bad = (scan.finite == 1u && special)
            || (scan.non_negative == 1u && (negative || infinite));
        if (bad && bad_at == 0xffffffffu) {
            bad_at = i;
        }
    }
    if (bad_at != 0xffffffffu) {
        atomicMax(&flags[scan.slot], 0xffffffffu - (scan.chunk.row_base + bad_at));
    }
}
