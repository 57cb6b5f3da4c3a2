//! Whole-step tests.
