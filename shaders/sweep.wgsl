// The tile sweep, the one loop every pairwise kernel is built on (session pairs, JRC, in-batch
// and cross-batch softmax, contrastive, circle and multi-similarity): each invocation visits the
// items `mine` = [first, end) of a span of items `span` = [first, end) that its whole workgroup
// walks in order. Where TILED the span is staged through workgroup memory TC items at a time, so
// that every item is loaded once per workgroup instead of once per invocation; otherwise each
// invocation reads the items it visits itself (GL llvmpipe takes minutes to compile a tile loop
// inside a loop with barriers, so the similarity kernels run untiled there).
//
// The kernel that imports this file defines
//   fn sweep_stage(lid: u32, first: u32, n: u32)   copy items [first, first + n) into its tile
//                                                 (every invocation calls it; TILED only)
//   fn sweep_visit(item: u32, slot: u32)           visit one item (slot: its place in the tile)
// and keeps what an invocation accumulates in `var<private>` variables. Call `sweep` from
// uniform control flow: every invocation of the workgroup, live or not, with the same span.

//#import common.wgsl

// Items per tile.
const TC: u32 = 256u; // @spec
// Whether items are staged through workgroup memory.
const TILED: bool = true; // @spec
// The visits of a tile are written out four per loop iteration. llvmpipe stops an invocation
// after 65,535 loop iterations in all, which a session sweep of one row per iteration reaches at
// about 65,000 items; four per iteration take it to about 250,000 (eight doubled the drivers'
// compile time of the pairwise kernels). Kernels whose visits hold loops of their own leave it
// off and bound their ranges instead.
const SWEEP_UNROLL: bool = false; // @spec

//#standalone
fn sweep_stage(lid: u32, first: u32, n: u32) {}
fn sweep_visit(item: u32, slot: u32) {}
//#end

fn sweep(lid: u32, live: bool, span: vec2<u32>, mine: vec2<u32>) {
    let step = select(max(span.y - span.x, 1u), TC, TILED);
    for (var base = span.x; base < span.y; base = base + step) {
        let n = min(step, span.y - base);
        if (TILED) {
            sweep_stage(lid, base, n);
            workgroupBarrier();
        }
        if (live) {
            let end = min(mine.y, base + n);
            var item = max(mine.x, base);
            if (SWEEP_UNROLL) {
                for (; item + 4u <= end; item = item + 4u) {
                    let slot = item - base;
                    sweep_visit(item, slot);
                    sweep_visit(item + 1u, slot + 1u);
                    sweep_visit(item + 2u, slot + 2u);
                    sweep_visit(item + 3u, slot + 3u);
                }
            }
            for (; item < end; item = item + 1u) {
                sweep_visit(item, item - base);
            }
        }
        if (TILED) {
            workgroupBarrier();
        }
    }
}
