//! Resolving a `--model` value to a loaded decoder and tokenizer.
//!
//! | form                  | meaning                                                     |
//! |-----------------------|-------------------------------------------------------------|
//! | `smollm2-135m`        | the default model, fetched into the cache on first use      |
//! | `dummy:NAME`          | a manifest in `models/` (or a path to one), seeded weights   |
//! | `hf:ORG/NAME[@REV]`   | a Hugging Face repo through the hf-hub cache (`HF_HOME`)    |
//! | `PATH/` or `PATH.gguf`| a local Hugging Face model directory or GGUF file           |

use crate::config::DecoderConfig;
use crate::decoder::Decoder;
use crate::fetch::SMOLLM2_135M;
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use crate::{gguf, ModelError, Result};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// The default `--model`.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Manifests compiled into the binary: `(name, json)`.
pub const MANIFESTS: &[(&str, &str)] = &[
    (
        "llama-3.1-8b",
        include_str!("../../../models/llama-3.1-8b.json"),
    ),
    (
        "llama-2-7b",
        include_str!("../../../models/llama-2-7b.json"),
    ),
    (
        "mistral-7b-v0.3",
        include_str!("../../../models/mistral-7b-v0.3.json"),
    ),
    (
        "qwen2.5-7b",
        include_str!("../../../models/qwen2.5-7b.json"),
    ),
    (
        "qwen2.5-0.5b",
        include_str!("../../../models/qwen2.5-0.5b.json"),
    ),
    (
        "smollm2-135m",
        include_str!("../../../models/smollm2-135m.json"),
    ),
];

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
    /// Seed for `dummy:` weights.
    pub seed: u64,
    /// A tokenizer to use instead of the model's own (`tokenizer.json` or a `.gguf`).
    pub tokenizer: Option<PathBuf>,
    /// Plain candle ops or the fused kernels (see [`crate::KernelChoice`]).
    pub kernels: crate::KernelChoice,
    /// How weight matrices are stored (`--quant`, see [`crate::linear`]).
    pub quant: crate::QuantMode,
}

/// A model ready to run.
pub struct LoadedModel {
    /// What the user asked for (`--model`).
    pub name: String,
    /// Where it came from, for reports (a path, a repo, a manifest and seed).
    pub source: String,
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
}

fn unknown(spec: &str, reason: &str) -> ModelError {
    let names: Vec<&str> = MANIFESTS.iter().map(|(n, _)| *n).collect();
    ModelError::UnknownModel {
        spec: spec.to_string(),
        reason: format!(
            "{reason} (expected `{DEFAULT_MODEL}`, a local directory or .gguf file, `hf:ORG/NAME[@REV]`, or `dummy:NAME` with NAME in {})",
            names.join(", ")
        ),
    }
}

/// The config a `dummy:` spec describes (by manifest name or path).
pub fn manifest_config(name: &str) -> Result<DecoderConfig> {
    let (json, src) = match MANIFESTS.iter().find(|(n, _)| *n == name) {
        Some((_, json)) => (json.to_string(), format!("models/{name}.json")),
        None if name.ends_with(".json") => {
            let s = std::fs::read_to_string(name).map_err(|e| ModelError::io(name, e))?;
            (s, name.to_string())
        }
        None => return Err(unknown(&format!("dummy:{name}"), "no such manifest")),
    };
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| ModelError::config(&src, format!("invalid JSON: {e}")))?;
    let cfg = v
        .get("config")
        .ok_or_else(|| ModelError::config(&src, "manifest has no `config`"))?;
    DecoderConfig::from_hf_json(&cfg.to_string(), &src)
}

/// A model's config, weight source and tokenizer, opened but not yet loaded.
pub struct OpenedModel {
    pub config: DecoderConfig,
    pub weights: WeightSource,
    /// The model's own tokenizer, if it ships one.
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from (a path, a repo, a manifest and seed).
    pub source: String,
}

/// Resolve `spec` and open its files (fetching the default model if needed) without
/// reading the weights. `say` receives progress lines.
pub fn open_model(spec: &str, seed: u64, say: &dyn Fn(&str)) -> Result<OpenedModel> {
    let (config, weights, tokenizer, source) = if spec == DEFAULT_MODEL {
        let path = SMOLLM2_135M.ensure(say)?;
        open_gguf(&path)?
    } else if let Some(name) = spec.strip_prefix("dummy:") {
        let cfg = manifest_config(name)?;
        let source = format!("dummy weights for {name}, seed {seed}");
        (cfg, WeightSource::Dummy { seed }, None, source)
    } else if let Some(repo) = spec.strip_prefix("hf:") {
        open_hf_dir(&crate::hub::snapshot(repo, say)?)?
    } else {
        let path = Path::new(spec);
        if path.is_dir() {
            open_hf_dir(path)?
        } else if path.is_file() && spec.ends_with(".gguf") {
            open_gguf(path)?
        } else if path.exists() {
            return Err(unknown(spec, "a file that is not .gguf"));
        } else if spec.contains('/') || spec.ends_with(".gguf") {
            return Err(unknown(spec, "no such file or directory"));
        } else {
            return Err(unknown(spec, "not a known model"));
        }
    };
    Ok(OpenedModel {
        config,
        weights,
        tokenizer,
        source,
    })
}

/// Load what `spec` names. `say` receives progress lines (fetching, loading).
pub fn load_model(spec: &str, opts: &LoadOptions, say: &dyn Fn(&str)) -> Result<LoadedModel> {
    let opened = open_model(spec, opts.seed, say)?;
    let (cfg, mut weights, source) = (opened.config, opened.weights, opened.source);
    let tokenizer = match (&opts.tokenizer, opened.tokenizer) {
        (Some(path), _) => tokenizer_from_path(path)?,
        (None, Some(t)) => t,
        (None, None) => Tokenizer::byte_level(),
    };
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(ModelError::Tokenizer(format!(
            "the tokenizer has {} tokens but the model's vocabulary is {}",
            tokenizer.vocab_size(),
            cfg.vocab_size
        )));
    }
    let planned = crate::linear::weight_plan(&cfg, &weights, opts.quant, opts.dtype)?;
    check_fits_in_memory(&cfg, opts, planned.total_bytes(), &source)?;
    say(&format!("loading {source}"));
    let mut decoder =
        Decoder::load_quant(&cfg, &mut weights, opts.quant, opts.dtype, &opts.device)?;
    decoder.set_kernels(opts.kernels)?;
    Ok(LoadedModel {
        name: spec.to_string(),
        source,
        decoder,
        tokenizer,
    })
}

type Opened = (DecoderConfig, WeightSource, Option<Tokenizer>, String);

fn open_gguf(path: &Path) -> Result<Opened> {
    let (weights, cfg) = gguf::open(path)?;
    let tokenizer = Tokenizer::from_gguf(weights.metadata()).map_err(|e| in_file(path, e))?;
    Ok((
        cfg,
        WeightSource::Gguf(Box::new(weights)),
        Some(tokenizer),
        path.display().to_string(),
    ))
}

/// A tokenizer from `tokenizer.json` or from a GGUF file's metadata.
pub fn tokenizer_from_path(path: &Path) -> Result<Tokenizer> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let (_map, header) = gguf::read_header(path)?;
        Tokenizer::from_gguf(&header.metadata).map_err(|e| in_file(path, e))
    } else {
        Tokenizer::from_file(path)
    }
}

/// A Hugging Face model directory: config.json, tokenizer.json, *.safetensors.
fn open_hf_dir(dir: &Path) -> Result<Opened> {
    let cfg_path = dir.join("config.json");
    let json = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let cfg = DecoderConfig::from_hf_json(&json, &cfg_path.display().to_string())?;
    let files = safetensors_files(dir)?;
    let weights = WeightSource::safetensors(files)?;
    cfg.check_layers(
        weights.layer_indices().into_iter(),
        &dir.display().to_string(),
    )?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = match tok_path.is_file() {
        true => Some(Tokenizer::from_file(&tok_path)?),
        false => None,
    };
    Ok((cfg, weights, tokenizer, dir.display().to_string()))
}

/// The weight files of a model directory: the shards named by
/// `model.safetensors.index.json`, or every `*.safetensors` file.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let s = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&s)
            .map_err(|e| ModelError::weights(&index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::weights(&index, "missing `weight_map`"))?;
        let mut files = Vec::new();
        for (tensor, file) in map {
            let name = file
                .as_str()
                .filter(|f| is_plain_file_name(f))
                .ok_or_else(|| {
                    ModelError::weights(
                        &index,
                        format!(
                            "`weight_map` entry `{tensor}` = {file} is not a file name in the \
                         model directory"
                        ),
                    )
                })?;
            files.push(dir.join(name));
        }
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::weights(
            dir,
            "no *.safetensors files in the model directory",
        ));
    }
    Ok(files)
}

/// A tokenizer error, with the file it came from.
fn in_file(path: &Path, e: ModelError) -> ModelError {
    match e {
        ModelError::Tokenizer(m) => ModelError::Tokenizer(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// A shard name from an index: one path component, no `..`, no separators.
fn is_plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains(['/', '\\'])
        && p.file_name().is_some_and(|f| f == name)
        && name != ".."
}

/// Refuse to start loading weights that cannot fit (a manifest or config can claim any
/// size): on a CPU run the weights as they will be stored (`weights` bytes: the run
/// dtype, or their quantized types) must fit in the memory available,
/// and on any device the largest tensor must fit there in f32 (tensors are made or
/// dequantized in f32 on the host first).
fn check_fits_in_memory(
    cfg: &DecoderConfig,
    opts: &LoadOptions,
    weights: u64,
    source: &str,
) -> Result<()> {
    let Some(available) = available_memory_bytes() else {
        return Ok(());
    };
    let (v, h, i) = (
        cfg.vocab_size as u64,
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
    );
    let largest_f32 = (v * h)
        .max(h * i)
        .max(h * (cfg.num_attention_heads * cfg.head_dim) as u64)
        * 4;
    let gb = |b: u64| b as f64 / 1e9;
    let (what, needed) = if opts.device.is_cpu() && weights > available {
        (
            format!("its weights ({:?}, --quant {})", opts.dtype, opts.quant),
            weights,
        )
    } else if largest_f32 > available {
        ("its largest tensor in f32".to_string(), largest_f32)
    } else {
        return Ok(());
    };
    Err(ModelError::config(
        source,
        format!(
            "{what} need {:.1} GB but this machine has {:.1} GB of memory available",
            gb(needed),
            gb(available)
        ),
    ))
}

/// `MemAvailable` from /proc/meminfo (Linux); `None` elsewhere.
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
