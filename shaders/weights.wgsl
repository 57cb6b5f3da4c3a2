// A term's sample weight w_i (docs/LOSSES.md, "Conventions"): 1 without sample weights. A term
// with them gets this function generated (src/losses/mod.rs, `SampleWeight`): one tensor, or a
// linear combination of label tensors, each bound as `weight<k>`.

//#splice sample_weight
fn sample_weight(r: u32) -> f32 {
    return 1.0;
}
//#end
