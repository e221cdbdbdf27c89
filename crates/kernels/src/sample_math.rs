//! The element math of `sample` that decides which token is drawn, operation for operation
//! as kernels/sample_math.cuh (which the CUDA kernel includes): plain IEEE add/mul/div
//! rounded to nearest (Rust never fuses them; the .cuh uses explicit `__f*_rn`
//! intrinsics), constants given by their bits. A test compiles the .cuh with `cc` and
//! compares it with these functions bit for bit (sample_math_tests.rs).

const NEG_87: f32 = -87.0;
/// A token's mass is `trunc(w * 2^40)`: integer sums are exact and order-free.
const MASS_ONE: f32 = 1_099_511_627_776.0;

fn bits(b: u32) -> f32 {
    f32::from_bits(b)
}

/// NaN -> -inf, +inf -> f32::MAX, -0 -> +0: the value every later step sees.
#[inline]
pub(crate) fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// `exp(x)` for `x <= 0` (Cody-Waite reduction, Cephes polynomial, relative error below
/// 3e-7); 0 for `x <= -87`, -inf and NaN.
#[inline]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    if x.is_nan() || x <= NEG_87 {
        return 0.0;
    }
    let x = if x < 0.0 { x } else { 0.0 };
    let shift = bits(0x4b40_0000); // 1.5 * 2^23: adding it rounds to an integer
    let t = x * bits(0x3fb8_aa3b) + shift; // log2(e)
    let n = t - shift;
    let r = (x - n * bits(0x3f31_8000)) - n * bits(0xb95e_8083); // ln 2, hi + lo
    let mut p = bits(0x3950_6967);
    for c in [
        0x3ab7_43ce,
        0x3c08_8908,
        0x3d2a_a9c1,
        0x3e2a_aaaa,
        0x3f00_0000,
    ] {
        p = p * r + bits(c);
    }
    let y = (p * r) * r + r + 1.0;
    // 2^n, n in [-126, 0]: t's low mantissa bits hold n.
    let e = t.to_bits().wrapping_sub(shift.to_bits());
    y * f32::from_bits(e.wrapping_add(127) << 23)
}

/// The unnormalized probability of logit `x`: `exp((x - max) / t)` in (0, 1], or 0.
#[inline]
pub(crate) fn weight(x: f32, max: f32, t: f32) -> f32 {
    exp_nonpos((x - max) / t)
}

#[inline]
pub(crate) fn mass(w: f32) -> u64 {
    (w * MASS_ONE) as u64
}

/// `ln(1 + f)` for f in (-1/2, 1): `2 atanh(s)`, `s = f / (2 + f)` in (-1/3, 1/3).
fn log1p_series(f: f32) -> f32 {
    let s = f / (2.0 + f);
    let s2 = s * s;
    let mut p = bits(0x3d70_f0f1); // 1/17
    for c in [
        0x3d88_8889,
        0x3d9d_89d9,
        0x3dba_2e8c,
        0x3de3_8e39,
        0x3e12_4925,
        0x3e4c_cccd,
        0x3eaa_aaab,
    ] {
        p = p * s2 + bits(c); // 1/15, 1/13, ..., 1/3
    }
    2.0 * (s + (s * s2) * p)
}

/// An Exp(1) variate from 32 random bits: `-ln U` with `U = (2 b + 1) / 2^33`, computed
/// as `-ln U` when U <= 1/2 and as `-ln(1 - V)`, `V = 1 - U`, above, so that it keeps
/// about 24 significant bits over its whole range (2^-33 .. 22.9).
#[inline]
pub(crate) fn exponential(b: u32) -> f32 {
    let two_m33 = bits(0x2f00_0000);
    if b >= 0x8000_0000 {
        let v = ((!b) * 2 + 1) as f32 * two_m33;
        -log1p_series(-v)
    } else {
        let u = (b * 2 + 1) as f32 * two_m33;
        let e = ((u.to_bits() >> 23) as i32 - 127) as f32;
        let m = f32::from_bits((u.to_bits() & 0x007f_ffff) | 0x3f80_0000);
        -(e * bits(0x3f31_7218) + log1p_series(m - 1.0))
    }
}

/// A monotone map of floats (no NaN) to u32.
#[inline]
fn ord(x: f32) -> u32 {
    let u = x.to_bits();
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

#[inline]
fn unord(o: u32) -> f32 {
    f32::from_bits(if o & 0x8000_0000 != 0 {
        o & 0x7fff_ffff
    } else {
        !o
    })
}

/// Keys order a row's tokens "more likely first" as one integer: the cleaned logit's
/// monotone bits above `id_max - id`, so equal logits rank by lowest id and every key
/// is distinct. The kept set of every filter is the tokens whose key is >= a threshold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    id_bits: u32,
}

impl Keys {
    pub fn new(vocab: usize) -> Self {
        let id_bits = (usize::BITS - vocab.saturating_sub(1).leading_zeros()).max(1);
        Keys { id_bits }
    }
    fn id_max(self) -> u64 {
        (1u64 << self.id_bits) - 1
    }
    pub fn bits(self) -> u32 {
        32 + self.id_bits
    }
    pub fn key(self, x: f32, id: usize) -> u64 {
        (u64::from(ord(x)) << self.id_bits) | (self.id_max() - id as u64)
    }
    pub fn value(self, key: u64) -> f32 {
        unord((key >> self.id_bits) as u32)
    }
    pub fn id(self, key: u64) -> usize {
        (self.id_max() - (key & self.id_max())) as usize
    }
}
