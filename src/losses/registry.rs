//! Every loss type, from the families' lists: what a config may name, with its roles, parameters
//! and family. Adding a loss type to a family's `LOSS_TYPES` is all it takes to make it known.

use super::family::{LossType, Role};
use super::{
    distill, jrc, listwise, metric, mining, pairwise, retrieval, rows, softmax, statistics, ziln,
};
use crate::config::{LossTerm, Reduction, TermKind};

/// Every family's loss types, in the order the docs list them.
fn families() -> [&'static [&'static LossType]; 11] {
    [
        rows::LOSS_TYPES,
        softmax::LOSS_TYPES,
        statistics::LOSS_TYPES,
        distill::LOSS_TYPES,
        pairwise::LOSS_TYPES,
        jrc::LOSS_TYPES,
        listwise::LOSS_TYPES,
        retrieval::LOSS_TYPES,
        mining::LOSS_TYPES,
        metric::LOSS_TYPES,
        ziln::LOSS_TYPES,
    ]
}

/// Every loss type.
pub(crate) fn all() -> impl Iterator<Item = &'static LossType> {
    families().into_iter().flatten().copied()
}

/// The loss type of this name.
pub(crate) fn lookup(name: &str) -> Option<&'static LossType> {
    all().find(|t| t.name == name)
}

/// Every `loss_type` a config may name.
pub fn loss_type_names() -> Vec<&'static str> {
    all().map(|t| t.name).collect()
}

impl TermKind {
    /// The loss type's registry entry (none for a name no family declares: a config built in
    /// code, refused when validated).
    pub(crate) fn entry(&self) -> Option<&'static LossType> {
        lookup(self.loss_type())
    }

    /// The input roles this loss type reads.
    pub fn roles(&self) -> &'static [Role] {
        self.entry().map_or(&[], |t| t.roles)
    }

    /// Roles whose tensors receive a gradient.
    pub fn differentiable_roles(&self) -> Vec<&'static str> {
        self.entry()
            .map(|t| t.differentiable_roles().collect())
            .unwrap_or_default()
    }

    /// Whether the uncertainty strategy uses the 0.5·e^{−s} form (regression terms).
    pub fn is_regression(&self) -> bool {
        self.entry().is_some_and(|t| t.regression)
    }
}

impl LossTerm {
    /// The reduction in force: the configured one, else the loss type's default
    /// (`weighted_mean` for softmax CE with class weights, as PyTorch; `nonzero_mean` otherwise).
    pub fn effective_reduction(&self) -> Reduction {
        if let Some(r) = self.reduction {
            return r;
        }
        match self.kind.entry() {
            Some(t) => t.family.default_reduction(self),
            None => Reduction::NonzeroMean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parameters_known() {
        let names = loss_type_names();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} is declared twice");
        }
        for t in all() {
            let fields = (t.params.fields)();
            for r in t.roles {
                assert!(
                    !fields.contains(&r.name),
                    "{}: role {} is also a key",
                    t.name,
                    r.name
                );
            }
            assert!(t.differentiable_roles().next().is_some(), "{}", t.name);
        }
    }
}
