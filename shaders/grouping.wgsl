// How a kernel over rows grouped by session finds them: the rows sorted by their session ids
// (session.wgsl), each with its session's [start, end) of sorted positions, or, without a
// session tensor, the whole batch as one session in batch order. Shared by the pairwise and JRC
// kernels.

//#import common.wgsl

// Whether a session tensor groups the rows (then `bounds` and `order` are bound).
const GROUPED: bool = true; // @spec

//#if GROUPED
// [start, end) of each sorted row's session, and the batch row at each sorted position.
@group(0) @binding(30) var<storage, read> bounds: array<vec2<u32>>;
@group(0) @binding(31) var<storage, read> order: array<u32>;

fn session_range(p: u32, rows: u32) -> vec2<u32> {
    return bounds[p];
}

fn batch_row(p: u32) -> u32 {
    return order[p];
}
//#else
fn session_range(p: u32, rows: u32) -> vec2<u32> {
    return vec2<u32>(0u, rows);
}

fn batch_row(p: u32) -> u32 {
    return p;
}
//#endif
