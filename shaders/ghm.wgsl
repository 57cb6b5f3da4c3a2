// GHM-C (docs/LOSSES.md, "Gradient-density terms"; Li et al. AAAI 2019, mmdetection GHMC): the
// gradient norm of a row and its bin. The counts are taken in the statistics pass and turned
// into weights by `ghm_prepare` (prepare.wgsl).

//#import common.wgsl

// g = |σ(x) − y|, detached.
fn ghm_g(x: f32, y: f32) -> f32 {
    return abs(sigmoid(x) - y);
}

// The k with k/bins ≤ g < (k+1)/bins; the last bin is closed at 1 + 1e-6, so g = 1 falls in it.
// The edges are compared directly because g·bins can round across one.
fn ghm_bin(g: f32, bins: u32) -> u32 {
    let b = f32(bins);
    var k = min(u32(max(floor(g * b), 0.0)), bins - 1u);
    if (k > 0u && g < f32(k) / b) {
        k = k - 1u;
    }
    if (k + 1u < bins && g >= f32(k + 1u) / b) {
        k = k + 1u;
    }
    return k;
}
