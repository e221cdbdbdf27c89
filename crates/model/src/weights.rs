//! Where a decoder's tensors come from: safetensors files, a GGUF file, or a seed.
//!
//! Every source answers `get(hf_name, shape)` with a tensor of that Hugging Face name and
//! shape in the run dtype on the run device, or an error naming the tensor and the file.
//! The decoder asks for exactly the tensors it needs, so a missing or misshapen tensor is
//! caught at load.

use crate::gguf::GgufWeights;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use engine_formats::safetensors::{Dtype, Header};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::PathBuf;

/// A source of named weight tensors.
pub enum WeightSource {
    /// One or more `.safetensors` files (a sharded checkpoint is several).
    Safetensors(Box<SafetensorsFiles>),
    /// A GGUF file, dequantized tensor by tensor.
    Gguf(Box<GgufWeights>),
    /// Weights drawn from a seed (see [`dummy_tensor`]).
    Dummy { seed: u64 },
}

/// Memory-mapped safetensors files whose headers `engine_formats` has checked (dtypes,
/// shapes, offsets inside the file), with each tensor name mapped to its file.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, Mmap, Header)>,
    index: HashMap<String, usize>,
}

impl SafetensorsFiles {
    /// Map and check every file; a tensor name in two files is an error.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for p in paths {
            if !p.is_file() {
                return Err(ModelError::weights(p, "file not found"));
            }
            let file = std::fs::File::open(p).map_err(|e| ModelError::io(p, e))?;
            // SAFETY: mapped read-only and never written through; a file changed by
            // another process while mapped is outside what we support (as in every mmap
            // loader, candle's included).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(p, e))?;
            let header = Header::parse(&map).map_err(|e| ModelError::weights(p, e.to_string()))?;
            for t in &header.tensors {
                if let Some(&first) = index.get(&t.name) {
                    let (other, _, _): &(PathBuf, Mmap, Header) = &files[first];
                    return Err(ModelError::weights(
                        p,
                        format!("tensor `{}` is also in {}", t.name, other.display()),
                    ));
                }
                index.insert(t.name.clone(), files.len());
            }
            files.push((p.clone(), map, header));
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every tensor name, across files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The tensor `name`, checked to have `shape`, in its stored dtype on the CPU.
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(&i) = self.index.get(name) else {
            let label = paths_label(&self.files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
            return Err(ModelError::weights(
                label,
                format!("missing tensor `{name}`"),
            ));
        };
        let (path, map, header) = &self.files[i];
        let bad = |reason: String| ModelError::weights(path, reason);
        let info = header
            .tensor(name)
            .ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
        if info.shape != shape {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        let dtype = candle_dtype(info.dtype).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has dtype {:?}, which this engine cannot load",
                info.dtype
            ))
        })?;
        let bytes = map
            .get(info.range.start as usize..info.range.end as usize)
            .ok_or_else(|| bad(format!("tensor `{name}` lies outside the file")))?;
        Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))
    }
}

fn candle_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

impl WeightSource {
    /// Open safetensors files by memory-mapping them (checks their headers).
    pub fn safetensors(paths: Vec<PathBuf>) -> Result<Self> {
        Ok(Self::Safetensors(Box::new(SafetensorsFiles::open(&paths)?)))
    }

    /// The tensor `name` with shape `shape`, converted to `dtype` on `device`.
    pub fn get(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let t = match self {
            Self::Safetensors(files) => files.load(name, shape)?,
            Self::Gguf(g) => g.get(name, shape)?,
            Self::Dummy { seed } => dummy_tensor(*seed, name, shape)?,
        };
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// Whether the source has a tensor of this name (used for optional `lm_head`).
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Safetensors(files) => files.contains(name),
            Self::Gguf(g) => g.contains(name),
            Self::Dummy { .. } => false,
        }
    }

    /// The layer numbers of the per-layer tensors (`model.layers.N.…`, `blk.N.…`);
    /// none for seeded weights, which have exactly the configured layers.
    pub fn layer_indices(&self) -> Vec<usize> {
        use crate::config::gguf::layer_index;
        match self {
            Self::Safetensors(f) => f
                .names()
                .filter_map(|n| layer_index(n, "model.layers."))
                .collect(),
            Self::Gguf(g) => g
                .header()
                .tensors
                .iter()
                .filter_map(|t| layer_index(&t.name, "blk."))
                .collect(),
            Self::Dummy { .. } => Vec::new(),
        }
    }
}

fn paths_label(paths: &[PathBuf]) -> PathBuf {
    match paths {
        [one] => one.clone(),
        [first, ..] => first
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| first.clone()),
        [] => PathBuf::from("<no files>"),
    }
}

/// Deterministic weights for benchmarking real shapes offline.
///
/// Each tensor depends only on `(seed, name)`: norms are 1, everything else is uniform
/// with standard deviation 0.02 (the usual init scale), so a dummy model's activations stay
/// in a realistic range. Generation runs in parallel chunks whose streams are seeded by
/// `(seed, name, chunk)`, so the result does not depend on the thread count or the device.
pub fn dummy_tensor(seed: u64, name: &str, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if name.ends_with("norm.weight") {
        return Ok(Tensor::ones(shape, DType::F32, &Device::Cpu)?);
    }
    const CHUNK: usize = 1 << 20;
    let half_width = 0.02f32 * 3f32.sqrt();
    let base = splitmix(seed ^ fnv1a(name.as_bytes()));
    let mut data = vec![0f32; n];
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(32);
    let per_thread = n.div_ceil(threads).div_ceil(CHUNK).max(1) * CHUNK;
    std::thread::scope(|s| {
        for (t, part) in data.chunks_mut(per_thread).enumerate() {
            s.spawn(move || {
                for (c, chunk) in part.chunks_mut(CHUNK).enumerate() {
                    let chunk_id = (t * per_thread / CHUNK + c) as u64;
                    let mut state = splitmix(base ^ chunk_id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    for x in chunk.iter_mut() {
                        state = splitmix(state);
                        let u = (state >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                        *x = (2.0 * u - 1.0) * half_width;
                    }
                }
            });
        }
    });
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_weights_depend_on_seed_and_name_only() -> Result<()> {
        let a = dummy_tensor(7, "model.layers.0.mlp.up_proj.weight", &[64, 40000])?;
        let b = dummy_tensor(7, "model.layers.0.mlp.up_proj.weight", &[64, 40000])?;
        let c = dummy_tensor(8, "model.layers.0.mlp.up_proj.weight", &[64, 40000])?;
        let d = dummy_tensor(7, "model.layers.1.mlp.up_proj.weight", &[64, 40000])?;
        let diff = |x: &Tensor, y: &Tensor| -> Result<f32> {
            Ok((x - y)?.abs()?.sum_all()?.to_scalar::<f32>()?)
        };
        assert_eq!(diff(&a, &b)?, 0.0);
        assert!(diff(&a, &c)? > 1.0);
        assert!(diff(&a, &d)? > 1.0);
        let std = a.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
        assert!((std - 0.02).abs() < 0.001, "std {std}");
        Ok(())
    }
}
