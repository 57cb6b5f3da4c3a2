// Grouping rows by session on the GPU, without reading the ids back: a stable LSD radix sort of
// (session id, row) with 8-bit digits, then each sorted row's session range [start, end).
//
// Keys are the raw bits of the ids, low word then high word (64-bit ids): only equality matters,
// so signed ids need no flipping. Each radix pass is `session_histogram` (per-workgroup digit
// counts), `session_scan` (one workgroup: exclusive prefix over (digit, workgroup), digit-major;
// it also flags a pass whose keys all share one digit) and `session_scatter` (each key to its
// prefix plus its rank among the equal digits before it in its workgroup: stable, hence
// deterministic; a flagged pass is a plain copy). The rank reads the workgroup's digits packed 16
// to a vec4<u32> and counts the equal bytes of each word at once (at most 16 loads per key, where
// one digit per load took up to 255). No float and no order-dependent atomics.
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
// The workgroup's 256 digits, byte b of component c of entry i being digit 16·i + 4·c + b.
var<workgroup> packed_digits: array<vec4<u32>, 16>;
var<workgroup> scan_block: array<u32, 256>;
// Whether every key of the pass has the same digit (then the scatter is the identity).
var<workgroup> one_digit: atomic<u32>;
var<workgroup> copy_pass: u32;

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
    flag_one_digit(lid, n, chunk.rows);
}

// counts[n] = 1 when one digit holds all `rows` keys (its bucket spans the whole prefix), else 0.
fn flag_one_digit(lid: u32, n: u32, rows: u32) {
    if (lid == 0u) {
        atomicStore(&one_digit, 0u);
    }
    storageBarrier();
    workgroupBarrier();
    let wgs = n / 256u;
    let bucket_end = select(rows, counts[(lid + 1u) * wgs], lid < 255u);
    if (rows != 0u && bucket_end - counts[lid * wgs] == rows) {
        atomicStore(&one_digit, 1u);
    }
    workgroupBarrier();
    if (lid == 0u) {
        counts[n] = atomicLoad(&one_digit);
    }
}

// How many of the 4 bytes of `w` equal the byte `digit`, among the bytes under `mask` (SWAR:
// a byte of t = w ^ digit·0x01010101 is zero exactly when bit 7 of the result is set there).
fn equal_bytes(w: vec4<u32>, digit: u32, mask: vec4<u32>) -> u32 {
    let t = w ^ vec4<u32>(digit * 0x01010101u);
    let low = vec4<u32>(0x7f7f7f7fu);
    let zero = ~(((t & low) + low) | t | low) & mask;
    let c = countOneBits(zero);
    return c.x + c.y + c.z + c.w;
}

// The number of keys before `lid` in the workgroup with digit `digit` (packed_digits staged).
fn digit_rank(lid: u32, digit: u32) -> u32 {
    let full = lid / 16u;
    var rank = 0u;
    for (var i = 0u; i < full; i = i + 1u) {
        rank = rank + equal_bytes(packed_digits[i], digit, vec4<u32>(0xffffffffu));
    }
    // The entry holding lid: its bytes before lid.
    let before = vec4<i32>(i32(lid % 16u)) - vec4<i32>(0, 4, 8, 12);
    let bytes = vec4<u32>(clamp(before, vec4<i32>(0), vec4<i32>(4)));
    let mask = select((vec4<u32>(1u) << (8u * bytes)) - 1u, vec4<u32>(0xffffffffu), bytes == vec4<u32>(4u));
    return rank + equal_bytes(packed_digits[full], digit, mask);
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
    if (lid == 0u) {
        copy_pass = counts[256u * sort_workgroups(chunk.rows)];
    }
    if (workgroupUniformLoad(&copy_pass) == 1u) {
        if (valid) {
            keys_out[r] = keys_in[r];
            vals_out[r] = vals_in[r];
        }
        return;
    }
    // Keys beyond the batch come after every valid one, so their digit (0) counts for none.
    var key = SessionKey(0u, 0u);
    var digit = 0u;
    if (valid) {
        key = keys_in[r];
        digit = key_digit(key, params.pass_index);
    }
    tile_digits[lid] = digit;
    workgroupBarrier();
    if (lid < 16u) {
        var word = vec4<u32>(0u);
        for (var b = 0u; b < 16u; b = b + 1u) {
            word[b / 4u] = word[b / 4u] | (tile_digits[16u * lid + b] << (8u * (b % 4u)));
        }
        packed_digits[lid] = word;
    }
    workgroupBarrier();
    if (!valid) {
        return;
    }
    let at = counts[digit * chunk.wgs + wg] + digit_rank(lid, digit);
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
