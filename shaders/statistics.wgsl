// The statistics pass of a row group with batch-wide terms (docs/LOSSES.md, "Gradient-density
// terms" and "Batch-wide terms"; host side src/losses/statistics.rs): one read of those terms'
// tensors before their loss pass. GHM-C counts valid rows per bin (workgroup atomics, then one
// global add per bin), OHEM writes each row's order key and counts the positive values, F1 sums
// σ(x) and the class sums into per-workgroup partials. The terms are generated and spliced in:
// their bindings, workgroup counters and private sums, and
//   fn stats_begin(lid: u32)           zero this workgroup's counters
//   fn stats_row(r: u32)               one row's contributions
//   fn stats_end(lid: u32, wg: u32)    the workgroup's counts into `aux`, sums into `partials`
//                                      (every invocation calls it: it holds barriers)

//#import binary.wgsl
//#import ghm.wgsl

@group(0) @binding(0) var<storage, read> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> aux: array<atomic<u32>>;

//#splice terms
fn stats_begin(lid: u32) {}

fn stats_row(r: u32) {}

fn stats_end(lid: u32, wg: u32) {
    workgroupBarrier();
}
//#end

@compute @workgroup_size(256)
fn statistics(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    stats_begin(lid);
    workgroupBarrier();
    for (var j = 0u; j < ROWS_PER_INVOCATION; j = j + 1u) {
        let r = (wg * ROWS_PER_INVOCATION + j) * WG + lid;
        if (wg < chunk.wgs && r < chunk.rows) {
            stats_row(r);
        }
    }
    stats_end(lid, wg);
}
