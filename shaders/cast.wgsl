// Label casts (src/losses/labels.rs): a labels tensor that comes as I32, U32, I64, U64 or F64 is
// written once per step, first, into an f32 (or i32 class-id) view that every kernel reading it
// binds instead. Integers below 2^24 convert exactly; F64 rounds to nearest, ties to even, as
// Rust's `as f32` and NumPy's astype(float32) do (WGSL has no f64, so by the bits).

//#import common.wgsl

struct CastPass {
    chunk: Chunk,
}

@group(0) @binding(0) var<storage, read> params: CastPass;
@group(0) @binding(1) var<storage, read> source: array<u32>;
@group(0) @binding(2) var<storage, read_write> view: array<u32>;

// Elements per invocation (CAST_ITEMS in src/losses/labels.rs).
const ITEMS: u32 = 16u; // @spec
// The source's dtype: 0 f32, 1 i32, 2 u32, 3 i64, 4 u64, 5 f64.
const SOURCE: u32 = 3u; // @spec
// Class ids: the view is i32 (an id outside i32 becomes i32::MIN), else f32.
const TO_I32: bool = false; // @spec

// Whether the 64-bit (hi, lo) a is greater than b, and equal to it.
fn gt64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y > b.y);
}

// Rounds the 64-bit significand `s` (hi, lo) shifted right by `shift` (1..53) to nearest, ties
// to even: the integer part plus the rounding.
fn shift_round(s: vec2<u32>, shift: u32) -> u32 {
    var kept: u32;
    var rest: vec2<u32>;
    var half: vec2<u32>;
    if (shift < 32u) {
        kept = (s.y >> shift) | select(0u, s.x << (32u - shift), shift > 0u);
        rest = vec2<u32>(0u, s.y & ((1u << shift) - 1u));
        half = vec2<u32>(0u, 1u << (shift - 1u));
    } else {
        let k = shift - 32u;
        kept = s.x >> k;
        rest = vec2<u32>(s.x & ((1u << k) - 1u), s.y);
        half = select(vec2<u32>(1u << (k - 1u), 0u), vec2<u32>(0u, 0x80000000u), k == 0u);
    }
    let tie = all(rest == half);
    let up = gt64(rest, half) || (tie && (kept & 1u) == 1u);
    return kept + select(0u, 1u, up);
}

// The f32 bits of the f64 with words (lo, hi), rounded to nearest, ties to even.
fn f64_to_f32(lo: u32, hi: u32) -> u32 {
    let sign = hi & 0x80000000u;
    let e = (hi >> 20u) & 0x7ffu;
    let m_hi = hi & 0xfffffu;
    if (e == 0x7ffu) {
        return sign | select(0x7f800000u, 0x7fc00000u, (m_hi | lo) != 0u);
    }
    if (e == 0u) {
        return sign; // f64 subnormals are far below f32's smallest subnormal
    }
    // Significand with its implicit bit: 53 bits.
    let s = vec2<u32>(m_hi | 0x100000u, lo);
    let e32 = i32(e) - 896;
    if (e32 >= 255) {
        return sign | 0x7f800000u;
    }
    if (e32 >= 1) {
        // 24 significant bits: drop 29; a carry out of the mantissa lands in the exponent.
        let rounded = shift_round(s, 29u);
        return sign | ((u32(e32) << 23u) + (rounded - 0x800000u));
    }
    // An f32 subnormal: k · 2^-149 with k = s · 2^(e32 - 30).
    let shift = u32(30 - e32);
    if (shift > 53u) {
        return sign;
    }
    return sign | shift_round(s, shift);
}

// The f32 of a u64 magnitude (hi, lo): exact below 2^24, else within one rounding of nearest.
fn u64_to_f32(lo: u32, hi: u32) -> f32 {
    return f32(hi) * 4294967296.0 + f32(lo);
}

// The f32 bits of element i of the source.
fn real_bits(i: u32) -> u32 {
    switch SOURCE {
        case 1u: {
            return bitcast<u32>(f32(bitcast<i32>(source[i])));
        }
        case 2u: {
            return bitcast<u32>(f32(source[i]));
        }
        case 3u: {
            let lo = source[2u * i];
            let hi = source[2u * i + 1u];
            if (hi == select(0u, 0xffffffffu, bitcast<i32>(lo) < 0)) {
                return bitcast<u32>(f32(bitcast<i32>(lo)));
            }
            if ((hi & 0x80000000u) != 0u) {
                // Two's complement magnitude of a negative value.
                let nlo = ~lo + 1u;
                let nhi = ~hi + select(0u, 1u, nlo == 0u);
                return bitcast<u32>(-u64_to_f32(nlo, nhi));
            }
            return bitcast<u32>(u64_to_f32(lo, hi));
        }
        case 4u: {
            return bitcast<u32>(u64_to_f32(source[2u * i], source[2u * i + 1u]));
        }
        case 5u: {
            return f64_to_f32(source[2u * i], source[2u * i + 1u]);
        }
        default: {
            return source[i];
        }
    }
}

// The i32 class id of element i of a 64-bit integer source.
fn id_bits(i: u32) -> u32 {
    let lo = source[2u * i];
    let hi = source[2u * i + 1u];
    var fits: bool;
    if (SOURCE == 3u) {
        fits = hi == select(0u, 0xffffffffu, bitcast<i32>(lo) < 0);
    } else {
        fits = hi == 0u && lo <= 0x7fffffffu;
    }
    return select(0x80000000u, lo, fits);
}

@compute @workgroup_size(256)
fn cast_labels(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = linear_workgroup(wid, nwg);
    if (wg >= params.chunk.wgs) {
        return;
    }
    let end = min(params.chunk.rows, (wg + 1u) * WG * ITEMS);
    for (var i = wg * WG * ITEMS + lid; i < end; i = i + WG) {
        if (TO_I32) {
            view[i] = id_bits(i);
        } else {
            view[i] = real_bits(i);
        }
    }
}
