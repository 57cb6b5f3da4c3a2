// The state of a selection (select.wgsl) at aux[state ..], shared with the pairwise OHEM's
// histogram sweeps (pairwise.wgsl); mirrored in src/losses/select.rs.

//#import common.wgsl

const SEL_PREFIX: u32 = 0u;     // key prefix fixed so far; after the value rounds, t itself
const SEL_REMAINING: u32 = 1u;  // keys still to take among those matching the prefix
const SEL_INDEX: u32 = 2u;      // index prefix among keys equal to t; finally the last kept index
const SEL_DONE: u32 = 3u;       // 1 when every key equal to t is kept (no index rounds needed)
const SEL_COUNT: u32 = 4u;      // candidates counted by round 0 when k depends on it (else 0)
const SEL_RATIO: u32 = 5u;      // the keep ratio in units of 10^-9, with SEL_COUNT
const SEL_HIST: u32 = 8u;       // 256 counters, zero between rounds
const VALUE_ROUNDS: u32 = 4u;
