//! The GGUF tokenizer against llama.cpp's own reference tokenizations.
//!
//! llama.cpp ships vocab-only GGUFs with inputs (`ggml-vocab-NAME.gguf.inp`, cases separated
//! by a `__ggml_vocab_test__` line) and the token ids its tokenizer produces for each
//! (`.out`, one line of space-separated ids per case, `add_special = false`). They come
//! from the `llama-cpp-python` source distribution, fetched once into the project cache.
//!
//! Vocabularies checked, all passing: llama-spm, phi-3 (SentencePiece); llama-bpe, qwen2,
//! qwen35, gpt-2, mpt, starcoder, refact, command-r, falcon, deepseek-coder, deepseek-llm
//! (byte-level BPE); gemma-4 (BPE on raw UTF-8 with `▁` spaces). Not checked: bert-bge,
//! a WordPiece vocabulary, a kind `vocab_from_gguf` does not implement; aquila, baichuan,
//! gpt-neox and nomic-bert-moe, which ship without reference outputs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context, Result};
use engine_model::tokenizer::gguf::{vocab_from_gguf, GgufVocab};

const SDIST: &str = "llama-cpp-python==0.3.36";
const MODELS_IN_SDIST: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp/models";

/// The folder of `ggml-vocab-*` files, fetched on first use.
fn fixtures() -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = engine_model::paths::cache_dir().join("fixtures/llama-cpp-vocab");
    if !dir.join("ggml-vocab-llama-spm.gguf").exists() {
        fetch(&dir).with_context(|| format!("fetching llama.cpp vocab fixtures into {dir:?}"))?;
    }
    Ok(dir)
}

/// Download the sdist with pip, extract only the vocab files, and rename them into place.
fn fetch(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("fixture dir has no parent")?;
    std::fs::create_dir_all(parent)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let tmp = parent.join(format!(
        ".llama-cpp-vocab-{}-{}",
        std::process::id(),
        stamp.as_nanos()
    ));
    let result = fetch_into(&tmp, dir);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(tmp: &Path, dir: &Path) -> Result<()> {
    let download = tmp.join("download");
    // Only llama-cpp-python itself must be a source distribution; `:all:` would also build
    // its build backend's cmake from source just to read the package metadata.
    eprintln!(
        "fixtures: pip download --no-deps --no-binary llama-cpp-python {SDIST} -d {download:?} (about 77 MB, once)"
    );
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "llama-cpp-python",
            SDIST,
        ])
        .arg("-d")
        .arg(&download))?;
    let sdist = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .context("pip downloaded no .tar.gz")?;
    let extract = tmp.join("extract");
    std::fs::create_dir_all(&extract)?;
    eprintln!("fixtures: extracting {MODELS_IN_SDIST}/ggml-vocab-* from {sdist:?}");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&sdist)
        .arg("-C")
        .arg(&extract)
        .args(["--wildcards", &format!("{MODELS_IN_SDIST}/ggml-vocab-*")]))?;
    let models = extract.join(MODELS_IN_SDIST);
    eprintln!("fixtures: moving {models:?} to {dir:?}");
    if let Err(e) = std::fs::rename(&models, dir) {
        // Another test process may have finished first; its copy is as good as ours.
        ensure!(
            dir.join("ggml-vocab-llama-spm.gguf").exists(),
            "renaming into place: {e}"
        );
        eprintln!("fixtures: another process fetched them first; using theirs");
    }
    Ok(())
}

/// Run quietly: the tool's output (pip's progress bars) appears only if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The reference cases: (input text, expected ids), parsed as llama.cpp's test does.
fn cases(dir: &Path, name: &str) -> Result<Vec<(String, Vec<u32>)>> {
    let base = dir.join(format!("ggml-vocab-{name}.gguf"));
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp"))?;
    let out = std::fs::read_to_string(base.with_extension("gguf.out"))?;
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        let (text, tail) = rest.split_once(sep).unwrap_or((rest, ""));
        texts.push(text.to_owned());
        rest = tail;
    }
    let ids = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        texts.len() == ids.len(),
        "{name}: {} inputs, {} outputs",
        texts.len(),
        ids.len()
    );
    Ok(texts.into_iter().zip(ids).collect())
}

fn load(dir: &Path, name: &str) -> Result<GgufVocab> {
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    let (_map, header) = engine_model::gguf::read_header(&path)?;
    Ok(vocab_from_gguf(&header.metadata)?)
}

/// Every case encodes to llama.cpp's ids and decodes back to its input.
fn check(name: &str) -> Result<()> {
    let dir = fixtures()?;
    let vocab = load(&dir, name)?;
    let mut failures = Vec::new();
    for (text, want) in cases(&dir, name)? {
        let enc = vocab
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(anyhow::Error::msg)?;
        let got = enc.get_ids();
        if got != want.as_slice() {
            failures.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
            continue;
        }
        let back = vocab
            .tokenizer
            .decode(got, false)
            .map_err(anyhow::Error::msg)?;
        if back != text {
            failures.push(format!("{text:?}: decodes to {back:?}"));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{name}: {} failing cases:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() -> Result<()> {
            check($name)
        }
    )*};
}

vocab_tests! {
    llama_spm => "llama-spm",
    phi_3 => "phi-3",
    llama_bpe => "llama-bpe",
    qwen2 => "qwen2",
    qwen35 => "qwen35",
    gpt_2 => "gpt-2",
    mpt => "mpt",
    starcoder => "starcoder",
    refact => "refact",
    command_r => "command-r",
    falcon => "falcon",
    deepseek_coder => "deepseek-coder",
    deepseek_llm => "deepseek-llm",
    gemma_4 => "gemma-4",
}

#[test]
fn llama_spm_adds_bos_like_llama_cpp() -> Result<()> {
    let vocab = load(&fixtures()?, "llama-spm")?;
    ensure!(vocab.add_bos && !vocab.add_eos);
    let bos = vocab.bos_token_id.context("no BOS")?;
    let with = vocab
        .tokenizer
        .encode("Hello world", true)
        .map_err(anyhow::Error::msg)?;
    let without = vocab
        .tokenizer
        .encode("Hello world", false)
        .map_err(anyhow::Error::msg)?;
    ensure!(with.get_ids()[0] == bos && with.get_ids()[1..] == *without.get_ids());
    // A control token in the text is matched whole, then skipped when asked.
    let eos = vocab.eos_token_id.context("no EOS")?;
    let enc = vocab
        .tokenizer
        .encode("Hi</s>", false)
        .map_err(anyhow::Error::msg)?;
    ensure!(enc.get_ids().last() == Some(&eos), "{:?}", enc.get_ids());
    let text = vocab
        .tokenizer
        .decode(enc.get_ids(), true)
        .map_err(anyhow::Error::msg)?;
    ensure!(text == "Hi", "{text:?}");
    Ok(())
}

#[test]
fn llama_bpe_adds_bos_only() -> Result<()> {
    let vocab = load(&fixtures()?, "llama-bpe")?;
    ensure!(vocab.add_bos && !vocab.add_eos);
    let bos = vocab.bos_token_id.context("no BOS")?;
    let enc = vocab
        .tokenizer
        .encode("Hello", true)
        .map_err(anyhow::Error::msg)?;
    ensure!(enc.get_ids() == [bos, 9906], "{:?}", enc.get_ids());
    Ok(())
}
