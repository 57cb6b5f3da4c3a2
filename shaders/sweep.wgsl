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
            for (var item = max(mine.x, base); item < end; item = item + 1u) {
                sweep_visit(item, item - base);
            }
        }
        if (TILED) {
            workgroupBarrier();
        }
    }
}
