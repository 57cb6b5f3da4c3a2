//! Mutations of byte strings, drawn from a seeded generator so that a run is reproducible: bit
//! flips, random bytes, insertion, deletion and duplication of ranges, splices of two inputs,
//! interesting integers and lengths written at any offset (little-endian, 1 to 8 bytes),
//! truncation, and for text targets dictionary tokens, interesting numbers in place of numbers,
//! and lines taken from another input.

/// xoshiro256** seeded through splitmix64: fast, and the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            ((self.next_u64() as u128 * n as u128) >> 64) as usize
        }
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Small values more often than large ones: uniform in `1..=2^k` for k uniform in 0..=bits.
    pub fn small(&mut self, bits: u32) -> usize {
        let k = self.below(bits as usize + 1) as u32;
        1 + self.below(1usize << k)
    }

    /// An element of `v` (which must not be empty).
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Integers that find off-by-ones and overflows, as 64-bit patterns.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    32,
    64,
    100,
    127,
    128,
    255,
    256,
    512,
    1000,
    1024,
    4096,
    32767,
    32768,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
    (-2i64) as u64,
    (-128i64) as u64,
    0x3f80_0000, // 1.0f32
    0x7fc0_0000, // NaN f32
    0x7f80_0000, // inf f32
];

/// Numbers as text, for the config targets.
pub const INTERESTING_TEXT: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "0.5",
    "-0.0",
    "1e308",
    "1e309",
    "-1e308",
    "1e-320",
    "nan",
    "inf",
    "-inf",
    "NaN",
    "65535",
    "65536",
    "1024",
    "1025",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "0x7fffffff",
    "1_000",
    "true",
    "false",
    "\"\"",
    "[]",
    "{}",
    "[[]]",
];

/// Punctuation and structure of TOML and JSON.
pub const TEXT_TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "[[",
    "]]",
    "=",
    ",",
    ":",
    "\"",
    "'",
    "\n",
    " ",
    ".",
    "#",
    "\\",
    "\\u0000",
    "\u{feff}",
    "é",
    "\u{1f600}",
    "\"\"\"",
    "'''",
    "null",
];

/// What the mutator knows about the target's inputs.
pub struct Mutator {
    /// Inputs are text (TOML, JSON): numbers, tokens and lines are mutated as text too.
    pub text: bool,
    /// Words taken from the seeds (keys, loss types, tensor names, ...), for text targets.
    pub dictionary: Vec<Vec<u8>>,
    /// The longest input a mutation may produce.
    pub max_len: usize,
}

impl Mutator {
    /// A mutator for inputs like `seeds`; text targets get a dictionary of their words.
    pub fn new(seeds: &[Vec<u8>], text: bool, max_len: usize) -> Self {
        let mut dictionary: Vec<Vec<u8>> = Vec::new();
        if text {
            for s in seeds {
                for w in words(s) {
                    if !dictionary.contains(&w) {
                        dictionary.push(w);
                    }
                }
            }
            for t in TEXT_TOKENS {
                dictionary.push(t.as_bytes().to_vec());
            }
        }
        Self {
            text,
            dictionary,
            max_len,
        }
    }

    /// Applies 1 to 8 stacked mutations (fewer more often) to `input`; `other` is a second input
    /// for splices.
    pub fn mutate(&self, rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
        let rounds = rng.small(3);
        for _ in 0..rounds {
            self.once(rng, input, other);
        }
        input.truncate(self.max_len);
    }

    fn once(&self, rng: &mut Rng, v: &mut Vec<u8>, other: &[u8]) {
        let kinds = if self.text { 14 } else { 11 };
        match rng.below(kinds) {
            0 => {
                // Bit flips.
                if !v.is_empty() {
                    for _ in 0..rng.small(3) {
                        let i = rng.below(v.len());
                        v[i] ^= 1 << rng.below(8);
                    }
                }
            }
            1 => {
                // Random bytes.
                if !v.is_empty() {
                    for _ in 0..rng.small(2) {
                        let i = rng.below(v.len());
                        v[i] = rng.next_u64() as u8;
                    }
                }
            }
            2 => {
                // Insert random bytes.
                let at = rng.below(v.len() + 1);
                let n = rng.small(4);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, bytes);
            }
            3 => {
                // Delete a range.
                if !v.is_empty() {
                    let at = rng.below(v.len());
                    let n = rng.small(6).min(v.len() - at);
                    v.drain(at..at + n);
                }
            }
            4 => {
                // Duplicate a range.
                if !v.is_empty() && v.len() < self.max_len {
                    let at = rng.below(v.len());
                    let n = rng.small(6).min(v.len() - at);
                    let chunk = v[at..at + n].to_vec();
                    let to = rng.below(v.len() + 1);
                    v.splice(to..to, chunk);
                }
            }
            5 => {
                // Splice: a prefix of this input and a suffix of the other, or a chunk of the
                // other inserted.
                if !other.is_empty() {
                    if rng.one_in(2) {
                        let cut = rng.below(v.len() + 1);
                        let from = rng.below(other.len());
                        v.truncate(cut);
                        v.extend_from_slice(&other[from..]);
                    } else {
                        let from = rng.below(other.len());
                        let n = rng.small(8).min(other.len() - from);
                        let at = rng.below(v.len() + 1);
                        v.splice(at..at, other[from..from + n].iter().copied());
                    }
                }
            }
            6 => {
                // An interesting integer, little-endian, 1, 2, 4 or 8 bytes, at any offset.
                let x = *rng.pick(INTERESTING);
                let x = if rng.one_in(4) {
                    x.wrapping_add(rng.below(5) as u64).wrapping_sub(2)
                } else {
                    x
                };
                self.write_int(rng, v, x);
            }
            7 => {
                // A length: the input's own, or one of its prefixes', give or take a few, where
                // a length field may be (safetensors' header length at 0, a state's word count).
                let base = if rng.one_in(2) {
                    v.len()
                } else {
                    rng.below(v.len() + 1)
                };
                let x = (base as i64 + rng.below(17) as i64 - 8).max(0) as u64;
                let x = if rng.one_in(3) { x / 4 } else { x };
                self.write_int(rng, v, x);
            }
            8 => {
                // Truncate.
                let keep = rng.below(v.len() + 1);
                v.truncate(keep);
            }
            9 => {
                // Add or subtract a little at a byte.
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    let d = rng.below(35) as u8;
                    v[i] = if rng.one_in(2) {
                        v[i].wrapping_add(d)
                    } else {
                        v[i].wrapping_sub(d)
                    };
                }
            }
            10 => {
                // Overwrite a range with a copy of another range of the same input.
                if v.len() > 1 {
                    let from = rng.below(v.len());
                    let to = rng.below(v.len());
                    let n = rng.small(5).min(v.len() - from).min(v.len() - to);
                    let chunk = v[from..from + n].to_vec();
                    v[to..to + n].copy_from_slice(&chunk);
                }
            }
            11 => {
                // A dictionary word, inserted or in place of a word.
                if !self.dictionary.is_empty() {
                    let w = rng.pick(&self.dictionary).clone();
                    replace_or_insert_token(rng, v, &w, |c| c.is_ascii_alphanumeric() || c == b'_');
                }
            }
            12 => {
                // An interesting number in place of a number (or anywhere).
                let n = rng.pick(INTERESTING_TEXT).as_bytes().to_vec();
                replace_or_insert_token(rng, v, &n, |c| {
                    c.is_ascii_digit() || b"+-.eE_".contains(&c)
                });
            }
            _ => {
                // A line of the other input, at a line boundary of this one.
                let lines: Vec<&[u8]> = other.split_inclusive(|&c| c == b'\n').collect();
                if !lines.is_empty() {
                    let line = rng.pick(&lines).to_vec();
                    let starts: Vec<usize> = std::iter::once(0)
                        .chain(
                            v.iter()
                                .enumerate()
                                .filter(|(_, &c)| c == b'\n')
                                .map(|(i, _)| i + 1),
                        )
                        .collect();
                    let at = *rng.pick(&starts);
                    if rng.one_in(3) {
                        // In place of the line there.
                        let end = v[at..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .map_or(v.len(), |e| at + e + 1);
                        v.splice(at..end, line);
                    } else {
                        v.splice(at..at, line);
                    }
                }
            }
        }
    }

    fn write_int(&self, rng: &mut Rng, v: &mut Vec<u8>, x: u64) {
        let width = *rng.pick(&[1usize, 2, 4, 8]);
        let bytes = &x.to_le_bytes()[..width];
        if self.text {
            // In text, the number's decimal digits, in place of a number when there is one.
            let s = if rng.one_in(2) {
                x.to_string()
            } else {
                (x as i64).to_string()
            };
            replace_or_insert_token(rng, v, s.as_bytes(), |c| c.is_ascii_digit() || c == b'-');
            return;
        }
        // At offset 0 a third of the time: headers and length fields live there.
        let at = if rng.one_in(3) {
            0
        } else {
            rng.below(v.len() + 1)
        };
        if at + width <= v.len() {
            v[at..at + width].copy_from_slice(bytes);
        } else {
            v.truncate(at);
            v.extend_from_slice(bytes);
        }
    }
}

/// Replaces a random run of bytes matching `class` with `token`, or inserts it at a random
/// place when there is none (and half the time anyway).
fn replace_or_insert_token(
    rng: &mut Rng,
    v: &mut Vec<u8>,
    token: &[u8],
    class: impl Fn(u8) -> bool,
) {
    if !v.is_empty() && rng.one_in(2) {
        let start = rng.below(v.len());
        if let Some(i) = (start..v.len()).chain(0..start).find(|&i| class(v[i])) {
            let mut a = i;
            while a > 0 && class(v[a - 1]) {
                a -= 1;
            }
            let mut b = i;
            while b < v.len() && class(v[b]) {
                b += 1;
            }
            v.splice(a..b, token.iter().copied());
            return;
        }
    }
    let at = rng.below(v.len() + 1);
    v.splice(at..at, token.iter().copied());
}

/// The words of a text: identifiers and quoted strings (with their quotes).
pub fn words(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == b'_') {
                i += 1;
            }
            out.push(text[start..i].to_vec());
        } else if c == b'"' || c == b'\'' {
            let start = i;
            i += 1;
            while i < text.len() && text[i] != c && text[i] != b'\n' {
                i += 1;
            }
            if i < text.len() && text[i] == c {
                out.push(text[start..=i].to_vec());
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_decides_every_mutation() {
        let seeds = vec![b"loss_type = \"l2_loss\"\nweight = 1.5\n".to_vec()];
        let m = Mutator::new(&seeds, true, 4096);
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| {
                    let mut v = seeds[0].clone();
                    m.mutate(&mut rng, &mut v, &seeds[0]);
                    v
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // Mutations change inputs, and stay within the length bound.
        let outs = run(3);
        assert!(outs.iter().filter(|v| **v != seeds[0]).count() > 150);
        assert!(outs.iter().all(|v| v.len() <= 4096));
    }

    #[test]
    fn words_are_identifiers_and_quoted_strings() {
        let w = words(b"name = \"ctr\"\nloss_type='l2_loss' # x1\n");
        let w: Vec<String> = w
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(w, ["name", "\"ctr\"", "loss_type", "'l2_loss'", "x1"]);
    }

    #[test]
    fn below_is_in_range() {
        let mut r = Rng::new(9);
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
        assert_eq!(r.below(0), 0);
    }
}
