//! Named regions of the plan's two word buffers: `aux` (this step's batch-wide data: selection
//! states, histograms, factors, the pending GHM-C accumulators) and `state` (what persists between
//! steps and is saved with `Plan::save_state`: the combine pass's block, learned JRC weights,
//! memory-bank heads, the committed GHM-C accumulators). Families ask for regions by term and
//! name ([`LayoutBuilder`]); kernels get their offsets from the finished [`Layout`], so no offset
//! is computed by hand.

use std::collections::BTreeMap;

/// Words [offset, offset + words) of a buffer of u32 words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Region {
    pub offset: u32,
    pub words: u32,
}

/// The "slot" of regions that belong to the whole plan rather than to one term.
pub(crate) const PLAN: usize = usize::MAX;

/// What a region holds, for which term (its slot, or [`PLAN`]).
type Key = (usize, &'static str);

#[derive(Clone, Copy, Debug)]
struct Request {
    key: Key,
    words: u32,
}

/// Collects the regions the terms need; [`LayoutBuilder::finish`] places them.
#[derive(Debug)]
pub(crate) struct LayoutBuilder {
    state_base: u32,
    committed: Vec<Request>,
    aux: Vec<Request>,
    state: Vec<Request>,
}

impl LayoutBuilder {
    /// Regions after the first `state_base` words of the state (the combine pass's block).
    pub(crate) fn new(state_base: u32) -> Self {
        Self {
            state_base,
            committed: Vec::new(),
            aux: Vec::new(),
            state: Vec::new(),
        }
    }

    /// `words` of this step's values in `aux` that the combine pass copies onto the state when
    /// the step succeeds (GHM-C's accumulators): all such regions form one block at the start of
    /// `aux` and one after the combine block of the state, so that one copy commits them.
    pub(crate) fn committed(&mut self, slot: usize, name: &'static str, words: u32) {
        self.committed.push(Request {
            key: (slot, name),
            words,
        });
    }

    /// `words` of `aux` for this step.
    pub(crate) fn aux(&mut self, slot: usize, name: &'static str, words: u32) {
        self.aux.push(Request {
            key: (slot, name),
            words,
        });
    }

    /// `words` of the state.
    pub(crate) fn state(&mut self, slot: usize, name: &'static str, words: u32) {
        self.state.push(Request {
            key: (slot, name),
            words,
        });
    }

    /// Places every region, in the order asked.
    pub(crate) fn finish(self) -> Layout {
        let mut aux = BTreeMap::new();
        let mut state = BTreeMap::new();
        let mut aux_cursor = 0u32;
        let mut state_cursor = self.state_base;
        for r in &self.committed {
            aux.insert(r.key, Region::at(&mut aux_cursor, r.words));
            state.insert(r.key, Region::at(&mut state_cursor, r.words));
        }
        let commit = Commit {
            src: 0,
            dst: self.state_base,
            count: aux_cursor,
        };
        for r in &self.aux {
            aux.insert(r.key, Region::at(&mut aux_cursor, r.words));
        }
        for r in &self.state {
            state.insert(r.key, Region::at(&mut state_cursor, r.words));
        }
        Layout {
            aux,
            state,
            aux_words: aux_cursor,
            state_words: state_cursor,
            commit,
        }
    }
}

impl Region {
    fn at(cursor: &mut u32, words: u32) -> Self {
        let r = Region {
            offset: *cursor,
            words,
        };
        *cursor += words;
        r
    }
}

/// The words of `aux` from `src` that a successful step copies onto the state from `dst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Commit {
    pub src: u32,
    pub dst: u32,
    pub count: u32,
}

/// Every region, placed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    aux: BTreeMap<Key, Region>,
    state: BTreeMap<Key, Region>,
    /// Words of `aux`.
    pub aux_words: u32,
    /// Words of the state buffer.
    pub state_words: u32,
    /// The committed block.
    pub commit: Commit,
}

impl Layout {
    /// The region `name` of term `slot` in `aux` (its pending part when committed).
    pub(crate) fn aux(&self, slot: usize, name: &'static str) -> Option<Region> {
        self.aux.get(&(slot, name)).copied()
    }

    /// The region `name` of term `slot` in the state (its committed part when committed).
    pub(crate) fn state(&self, slot: usize, name: &'static str) -> Option<Region> {
        self.state.get(&(slot, name)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_blocks_come_first_and_are_contiguous() {
        let mut b = LayoutBuilder::new(10);
        b.aux(0, "stats", 5);
        b.committed(1, "ghm", 3);
        b.state(2, "bank", 2);
        b.committed(3, "ghm", 4);
        let l = b.finish();
        assert_eq!(
            l.aux(1, "ghm"),
            Some(Region {
                offset: 0,
                words: 3
            })
        );
        assert_eq!(
            l.aux(3, "ghm"),
            Some(Region {
                offset: 3,
                words: 4
            })
        );
        assert_eq!(
            l.aux(0, "stats"),
            Some(Region {
                offset: 7,
                words: 5
            })
        );
        assert_eq!(
            l.state(1, "ghm"),
            Some(Region {
                offset: 10,
                words: 3
            })
        );
        assert_eq!(
            l.state(2, "bank"),
            Some(Region {
                offset: 17,
                words: 2
            })
        );
        assert_eq!(
            l.commit,
            Commit {
                src: 0,
                dst: 10,
                count: 7
            }
        );
        assert_eq!((l.aux_words, l.state_words), (12, 19));
        assert_eq!(l.aux(0, "nope"), None);
    }
}
