// Grouping rows by session on the GPU, without reading the ids back: a stable LSD radix sort of
// (session id, row) with 8-bit digits, then each sorted row's session range [start, end).
//
// Keys are the raw bits of the ids, low word then high word (64-bit ids): only equality matters,
// so signed ids need no flipping. Each radix pass is `session_histogram` (per-workgroup digit
// counts), `session_scan` (one workgroup: exclusive prefix over (digit, workgroup), digit-major)
// and `session_scatter` (each key to its prefix plus its rank among the equal digits before it in
// its workgroup: stable, hence deterministic). No float and no order-dependent atomics.
// Each dispatch's parameters are a `SessionPass` (mirrored in src/losses/session.rs).

//#import common.wgsl

struct SessionKey {
    lo: u32,
    hi: u32,
}

struct SessionPass {
    chunk: Chunk,
    // The radix pass: digit 0..7, low word first.
    pass_index: u32,
    // Words per id: 1, or 2 for 64-bit ids.
    id_words: u32,
}

@group(0) @binding(0) var<storage, read> params: SessionPass;

var<workgroup> digit_hist: array<atomic<u32>, 256>;
var<workgroup> tile_digits: array<u32, 256>;
var<workgroup> scan_block: array<u32, 256>;

fn key_digit(key: SessionKey, pass_index: u32) -> u32 {
    let shift = 8u * (pass_index % 4u);
    var word = key.lo;
    if (pass_index >= 4u) {
        word = key.hi;
    }
    return (word >> shift) & 255u;
}

fn same_key(a: SessionKey, b: SessionKey) -> bool {
    return a.lo == b.lo && a.hi == b.hi;
}

// Workgroups of the sort: one per 256 keys.
fn sort_workgroups(rows: u32) -> u32 {
    return (rows + WG - 1u) / WG;
}

// Every entry point binds the same buffers (so one list of binds serves each pass; the ping-pong
// pair swaps between passes).
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> keys_in: array<SessionKey>;
@group(0) @binding(3) var<storage, read_write> vals_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<SessionKey>;
@group(0) @binding(5) var<storage, read_write> vals_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;
@group(0) @binding(7) var<storage, read_write> bounds: array<vec2<u32>>;

fn touch_all() {
    _ = ids[0];
    _ = keys_in[0];
    _ = vals_in[0];
    _ = keys_out[0];
    _ = vals_out[0];
    _ = counts[0];
    _ = bounds[0];
}

// keys_out[r] = (id bits), vals_out[r] = r: the unsorted input of the first radix pass.
@compute @workgroup_size(256)
fn session_init(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    touch_all();
    let chunk = params.chunk;
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg >= chunk.wgs || r >= chunk.rows) {
        return;
    }
    var key = SessionKey(ids[r * params.id_words], 0u);
    if (params.id_words == 2u) {
        key.hi = ids[r * 2u + 1u];
    }
    keys_out[r] = key;
    vals_out[r] = r;
}

// counts[digit * workgroups + wg] = how many of this workgroup's 256 keys have that digit.
@compute @workgroup_size(256)
fn session_histogram(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    touch_all();
    let chunk = params.chunk;
    atomicStore(&digit_hist[lid], 0u);
    workgroupBarrier();
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    if (wg < chunk.wgs && r < chunk.rows) {
        atomicAdd(&digit_hist[key_digit(keys_in[r], params.pass_index)], 1u);
    }
    workgroupBarrier();
    if (wg < chunk.wgs) {
        counts[lid * chunk.wgs + wg] = atomicLoad(&digit_hist[lid]);
    }
}

// Exclusive prefix sum of counts[0 .. 256 * workgroups], in place, by one workgroup: each
// invocation sums a contiguous block, the block totals are scanned, then each block is rewritten.
@compute @workgroup_size(256)
fn session_scan(@builtin(local_invocation_index) lid: u32) {
    touch_all();
    let chunk = params.chunk;
    let n = 256u * sort_workgroups(chunk.rows);
    let per = (n + WG - 1u) / WG;
    let begin = min(lid * per, n);
    let end = min(begin + per, n);
    var total = 0u;
    for (var i = begin; i < end; i = i + 1u) {
        total = total + counts[i];
    }
    scan_block[lid] = total;
    workgroupBarrier();
    if (lid == 0u) {
        var running = 0u;
        for (var i = 0u; i < WG; i = i + 1u) {
            let t = scan_block[i];
            scan_block[i] = running;
            running = running + t;
        }
    }
    workgroupBarrier();
    var running = scan_block[lid];
    for (var i = begin; i < end; i = i + 1u) {
        let c = counts[i];
        counts[i] = running;
        running = running + c;
    }
}

// Moves every key to counts[digit * workgroups + wg] plus the number of keys with the same digit
// before it in its workgroup: a stable pass.
@compute @workgroup_size(256)
fn session_scatter(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    touch_all();
    let chunk = params.chunk;
    let wg = linear_workgroup(wid, nwg);
    let r = wg * WG + lid;
    let valid = wg < chunk.wgs && r < chunk.rows;
    var key = SessionKey(0u, 0u);
    var digit = 256u;
    if (valid) {
        key = keys_in[r];
        digit = key_digit(key, params.pass_index);
    }
    tile_digits[lid] = digit;
    workgroupBarrier();
    if (!valid) {
        return;
    }
    var rank = 0u;
    for (var j = 0u; j < lid; j = j + 1u) {
        rank = rank + select(0u, 1u, tile_digits[j] == digit);
    }
    let at = counts[digit * chunk.wgs + wg] + rank;
    keys_out[at] = key;
    vals_out[at] = vals_in[r];
}

// bounds[p] = [start, end) of the run of keys equal to keys_in[p] (sorted): an exponential then a
// binary search each way, O(log size) per row.
@compute @workgroup_size(256)
fn session_bounds(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    touch_all();
    let chunk = params.chunk;
    let wg = linear_workgroup(wid, nwg);
    let p = wg * WG + lid;
    if (wg >= chunk.wgs || p >= chunk.rows) {
        return;
    }
    let n = chunk.rows;
    let key = keys_in[p];
    // Start: keys[p - step] equal for step < reach; the start lies in (p - reach, p - reach / 2].
    var reach = 1u;
    while (reach <= p && same_key(keys_in[p - reach], key)) {
        reach = reach * 2u;
    }
    var lo = select(0u, p + 1u - reach, reach <= p);
    var hi = p - reach / 2u;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (same_key(keys_in[mid], key)) {
            hi = mid;
        } else {
            lo = mid + 1u;
        }
    }
    let start = lo;
    // End (exclusive): the same search forwards.
    reach = 1u;
    while (p + reach < n && same_key(keys_in[p + reach], key)) {
        reach = reach * 2u;
    }
    lo = p + reach / 2u;
    hi = min(p + reach, n);
    // keys[lo] equals key; keys[hi] (when hi < n) does not: find the first unequal index.
    while (lo + 1u < hi) {
        let mid = (lo + hi) / 2u;
        if (same_key(keys_in[mid], key)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    bounds[p] = vec2<u32>(start, hi);
}
