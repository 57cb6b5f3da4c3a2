//! The plan's GPU state in Burn's module records: a [`LossfuseLoss`] is a Burn `Module` with one
//! int parameter, `state`, holding `Plan::save_state`'s bytes (its length, then the bytes as
//! little-endian words).
//!
//! Burn's optimizer visits and maps every parameter of a model each step, so the parameter is
//! lazy: it reads the plan's state from the GPU only when a record collects its value (saving),
//! and a mapper that leaves it uninitialised (the optimizer) costs nothing. A record that loads a
//! value (`load_record`, `load_file`) writes it into the plan; a state the plan refuses (another
//! config's) is the next `forward`'s `Err`, and the plan keeps its state.

use crate::loss::{Inner, LossfuseLoss};
use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
    Param,
};
use burn::tensor::{Device, Int, Shape, Tensor, TensorData};
use lossfuse::Error;
use std::sync::{Arc, Mutex};

const NAME: &str = "state";
const CONTAINER: &str = "LossfuseLoss";

/// The state's words: its byte length, then the bytes, zero-padded to whole words.
fn to_words(bytes: &[u8]) -> Vec<i32> {
    let mut words = vec![bytes.len() as i32];
    words.extend(bytes.chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        i32::from_le_bytes(w)
    }));
    words
}

fn from_words(words: &[i32]) -> Result<Vec<u8>, Error> {
    let len = words.first().copied().unwrap_or(0);
    let bytes: Vec<u8> = words.iter().skip(1).flat_map(|w| w.to_le_bytes()).collect();
    match usize::try_from(len) {
        Ok(len) if len > 0 && len <= bytes.len() => Ok(bytes[..len].to_vec()),
        _ => Err(Error::State(format!(
            "the record's lossfuse state holds no state (length word {len}): it was saved \
             from a loss whose state could not be read"
        ))),
    }
}

/// The state's lazy parameter, none before the plan exists (nothing to save).
fn state_param(inner: &Arc<Mutex<Inner>>) -> Option<Param<Tensor<1, Int>>> {
    let guard = inner.lock().unwrap_or_else(|e| e.into_inner());
    let (plan, device) = (guard.plan.as_ref()?, guard.device.clone()?);
    let words = 1 + plan.saved_state_len().div_ceil(4);
    let shared = inner.clone();
    let read = move |device: &Device, _grad: bool| {
        let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
        let saved = guard.plan.as_ref().map(|p| p.save_state());
        let words = match saved {
            Some(Ok(bytes)) => to_words(&bytes),
            Some(Err(e)) => {
                guard.refused_state = Some(Error::State(format!("saving the state: {e}")));
                vec![0; words]
            }
            None => vec![0; words],
        };
        let n = words.len();
        Tensor::<1, Int>::from_data(TensorData::new(words, [n]), device)
    };
    Some(Param::uninitialized(
        guard.state_id,
        read,
        device,
        false,
        Shape::new([words]),
    ))
}

/// Writes a loaded state into the plan, or keeps the refusal for the next `forward`.
fn load(inner: &Arc<Mutex<Inner>>, param: Param<Tensor<1, Int>>) {
    let id = param.id;
    let words = param.val().into_data().convert::<i32>().try_to_vec::<i32>();
    let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
    guard.state_id = id;
    let loaded = words
        .map_err(|e| Error::State(format!("the record's lossfuse state: {e:?}")))
        .and_then(|w| from_words(&w));
    let result = loaded.and_then(|bytes| match guard.plan.as_mut() {
        Some(plan) => plan.load_state(&bytes),
        None => Ok(()),
    });
    if let Err(e) = result {
        guard.refused_state = Some(e);
    }
}

impl Module for LossfuseLoss {
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        if let Some(param) = state_param(&self.inner) {
            visitor.enter_module(NAME, CONTAINER);
            Module::visit(&param, visitor);
            visitor.exit_module(NAME, CONTAINER);
        }
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        if let Some(param) = state_param(&self.inner) {
            mapper.enter_module(NAME, CONTAINER);
            let param = Module::map(param, mapper);
            mapper.exit_module(NAME, CONTAINER);
            if param.is_initialized() {
                load(&self.inner, param);
            }
        }
        self
    }

    /// The plan stays on the engine's device: lossfuse's state does not move between devices.
    fn to_device(self, _device: &Device) -> Self {
        self
    }

    fn fork(self, _device: &Device) -> Self {
        self
    }

    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        self.clone()
    }

    fn train(self) -> Self {
        self
    }
}

impl ModuleDisplayDefault for LossfuseLoss {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_single(&format!("{self:?}")).optional()
    }
}

impl ModuleDisplay for LossfuseLoss {}

impl std::fmt::Display for LossfuseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip_any_length() {
        for len in [1usize, 3, 4, 5, 101] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(from_words(&to_words(&bytes)).unwrap(), bytes);
        }
        assert!(from_words(&[0, 0, 0]).is_err());
        assert!(from_words(&[9, 0]).is_err());
    }
}
