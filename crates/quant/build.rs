//! Under the `cuda` feature, compiles ../../kernels/quant_*.cu (the quantized-matmul
//! kernels; engine-kernels compiles the others) to PTX and writes `$OUT_DIR/ptx.rs`
//! with one `pub const NAME: &str` per file. Without the feature it does nothing.
//!
//! nvcc: `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc`. Target
//! `-arch=compute_$CUDA_COMPUTE_CAP` (default 80; `__dp4a` needs 61), plus
//! `$ENGINE_NVCC_FLAGS`. docs/cuda.md has the toolchain.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP", "ENGINE_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("quant_") && (name.ends_with(".cu") || name.ends_with(".cuh"))
        })
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| match std::env::var("CUDA_HOME") {
        Ok(home) => format!("{home}/bin/nvcc"),
        Err(_) => "nvcc".into(),
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let extra = std::env::var("ENGINE_NVCC_FLAGS").unwrap_or_default();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut consts = String::new();
    for src in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
    {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "-std=c++17",
                &format!("-arch=compute_{cap}"),
            ])
            .arg("-I")
            .arg(&dir)
            .args(extra.split_whitespace())
            .arg("-o")
            .arg(&ptx)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run nvcc ({nvcc}): {e}; see docs/cuda.md"));
        assert!(status.success(), "nvcc failed on {}", src.display());
        consts.push_str(&format!(
            "pub const {}: &str = include_str!({:?});\n",
            stem.to_uppercase(),
            ptx.display().to_string()
        ));
    }
    std::fs::write(out.join("ptx.rs"), consts).expect("write ptx.rs");
}
