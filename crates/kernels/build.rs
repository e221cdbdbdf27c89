//! Compiles ../../kernels/*.cu to PTX with nvcc under the `cuda` feature (and does
//! nothing without it), and writes `$OUT_DIR/ptx.rs`: one `pub const NAME: &str` per
//! file, holding its PTX, plus `ALL: &[(&str, &str)]` (module name, PTX).
//!
//! nvcc: `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on PATH. Target:
//! `-arch=compute_$CUDA_COMPUTE_CAP` (default 80: PTX is JIT-compiled forward, so
//! compute_80 PTX also runs on sm_90; bf16 needs sm_80). Extra flags:
//! `$ENGINE_NVCC_FLAGS` (whitespace-separated), e.g. `-lineinfo` for compute-sanitizer.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let kernels_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    println!("cargo:rerun-if-changed={}", kernels_dir.display());
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP", "ENGINE_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", kernels_dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        // kernels/quant_*.cu belong to engine-quant, whose build.rs compiles them.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("quant_"))
        })
        .collect();
    sources.sort();
    let headers: Vec<PathBuf> = std::fs::read_dir(&kernels_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cuh"))
        .collect();
    for p in sources.iter().chain(headers.iter()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let nvcc = std::env::var("NVCC").ok().unwrap_or_else(|| {
        std::env::var("CUDA_HOME")
            .map(|h| format!("{h}/bin/nvcc"))
            .unwrap_or_else(|_| "nvcc".to_string())
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let extra = std::env::var("ENGINE_NVCC_FLAGS").unwrap_or_default();
    let mut consts = String::new();
    let mut all = String::from("pub const ALL: &[(&str, &str)] = &[\n");
    for src in &sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name");
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-I")
            .arg(&kernels_dir)
            .args(extra.split_whitespace())
            .arg("-o")
            .arg(&ptx)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run nvcc ({nvcc}): {e}; see docs/cuda.md"));
        assert!(status.success(), "nvcc failed on {}", src.display());
        let upper = stem.to_uppercase();
        consts.push_str(&format!(
            "pub const {upper}: &str = include_str!({:?});\n",
            ptx.display().to_string()
        ));
        all.push_str(&format!("    ({stem:?}, {upper}),\n"));
    }
    all.push_str("];\n");
    std::fs::write(out_dir.join("ptx.rs"), consts + &all).expect("write ptx.rs");
}
