//! kernels/sample_math.cuh (the kernel's token-deciding element math) compiled for the
//! host with `cc`, against the CPU port, bit for bit (declared from sample_tests.rs).
//! With plain IEEE operations standing in for the `__f*_rn` intrinsics and contraction off,
//! this checks the transcription, the constants and the integer tricks without a GPU; on a
//! GPU, the ignored device test compares whole tokens.
use crate::sample::{math, port};
use crate::{harness, philox};
use std::io::Write;
use std::process::{Command, Stdio};

const DRIVER: &str = r#"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef struct { uint32_t x, y, z, w; } uint4;
static inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    uint4 r = {a, b, c, d};
    return r;
}
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __uint2float_rn(uint32_t u) { return (float)u; }
static inline unsigned long long __float2ull_rz(float f) { return (unsigned long long)f; }
static inline uint32_t __umulhi(uint32_t a, uint32_t b) {
    return (uint32_t)(((uint64_t)a * b) >> 32);
}
#define SAMPLE_FN static inline
#include "sample_math.cuh"
int main(void) {
    uint32_t w[4];
    while (fread(w, 4, 4, stdin) == 4) {
        const float a = __uint_as_float(w[0]), b = __uint_as_float(w[1]);
        const float wt = weight(clean(a), clean(b), __uint_as_float(w[2]));
        const uint4 r = philox4x32_10(w[0], w[1], w[2], w[3], w[1] ^ w[3], w[0] + w[2]);
        printf("%08x %08x %08x %016llx %08x %08x %08x %08x %08x\n", key_ord(clean(a)),
               __float_as_uint(exp_nonpos(a)), __float_as_uint(wt), mass(wt),
               __float_as_uint(exponential(w[3])), r.x, r.y, r.z, r.w);
    }
    return 0;
}
"#;

/// The same line from the port.
fn port_line(w: [u32; 4]) -> String {
    let (a, b, t) = (
        f32::from_bits(w[0]),
        f32::from_bits(w[1]),
        f32::from_bits(w[2]),
    );
    let wt = math::weight(math::clean(a), math::clean(b), t);
    let ord = math::Keys::new(2).key(math::clean(a), 1) >> 1;
    let r = philox::philox4x32_10(w, [w[1] ^ w[3], w[0].wrapping_add(w[2])]);
    format!(
        "{ord:08x} {:08x} {:08x} {:016x} {:08x} {:08x} {:08x} {:08x} {:08x}",
        math::exp_nonpos(a).to_bits(),
        wt.to_bits(),
        math::mass(wt),
        math::exponential(w[3]).to_bits(),
        r[0],
        r[1],
        r[2],
        r[3]
    )
}

/// Records: logits over [-120, 30] and special values, maxima, temperatures in
/// (0.01, 3], and random bits plus the edges of the exponential's two branches.
fn records(n: usize) -> Vec<[u32; 4]> {
    let u = harness::random(4 * n, 1.0, 99);
    let bits: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(0x9E37_79B9) ^ (i >> 3))
        .collect();
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        -87.0,
        -86.99,
    ];
    let edges = [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX];
    (0..n)
        .map(|i| {
            let a = match i % 50 {
                k if k < specials.len() => specials[k],
                _ => (u[4 * i] - 0.6) * 150.0,
            };
            let max = if i % 3 == 0 {
                a.max(0.0)
            } else {
                (u[4 * i + 1] + 1.0) * 15.0
            };
            let t = 0.01 + (u[4 * i + 2] + 1.0) * 1.5;
            let b = if i % 97 < edges.len() {
                edges[i % 97]
            } else {
                bits[i]
            };
            [a.to_bits(), max.to_bits(), t.to_bits(), b]
        })
        .collect()
}

#[test]
fn the_kernels_element_math_equals_the_port_bit_for_bit() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("engine-sample-math-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (src, exe) = (dir.join("driver.c"), dir.join("driver"));
    std::fs::write(&src, DRIVER)?;
    let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            "-Wall",
            "-Werror",
            "-I",
            kernels,
        ])
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run the C compiler {cc:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cc} failed on kernels/sample_math.cuh");
    let recs = records(200_000);
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let input: Vec<u8> = recs
        .iter()
        .flatten()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    std::fs::remove_dir_all(&dir)?;
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), recs.len());
    let bad: Vec<String> = recs
        .iter()
        .zip(&lines)
        .filter(|(r, c)| port_line(**r) != **c)
        .take(5)
        .map(|(r, c)| format!("{r:08x?}: cc {c} / port {}", port_line(*r)))
        .collect();
    assert!(bad.is_empty(), "differences:\n{}", bad.join("\n"));
    Ok(())
}

/// The launch and radix constants the Rust side assumes are the kernel's.
#[test]
fn the_kernels_constants_match_the_port() -> anyhow::Result<()> {
    let cu = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../kernels/sample.cu"
    ))?;
    let constant = |name: &str| -> Option<usize> {
        let line = cu
            .lines()
            .find(|l| l.starts_with(&format!("constexpr int {name} = ")))?;
        line.split('=')
            .nth(1)?
            .trim()
            .trim_end_matches(';')
            .parse()
            .ok()
    };
    assert_eq!(constant("THREADS"), Some(port::THREADS));
    assert_eq!(constant("DIGIT"), Some(port::RADIX.digit_bits as usize));
    assert_eq!(constant("CAP"), Some(port::RADIX.cap));
    assert_eq!(constant("MAX_TOP"), Some(crate::sample::MAX_TOP));
    Ok(())
}
