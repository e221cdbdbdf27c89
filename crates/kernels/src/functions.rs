//! Kernel functions looked up once. Without a table, every launch finds its PTX module,
//! formats its function's name and asks candle for it (a lock, a map lookup by name and a
//! `cuModuleGetFunction`). [`Kernels::load`] does all of that once for the functions the
//! decoder and the sampler launch, in every dtype, and the ops launch from the table by
//! index. The decoder owns one (built when its fused kernels are chosen); the harness
//! builds one per check or bench; on the CPU it holds nothing.
//!
//! An op called without a table ([`Kernels::default`], what the plain functions such as
//! [`crate::silu_mul::silu_mul`] pass) or with a table of another device looks its
//! function up at the launch, as before.

use candle_core::{DType, Device};

/// A function of the table: one kernel of kernels/*.cu, per dtype. (Used by the CUDA
/// build only.)
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    AddRmsNorm,
    RopeAndCache,
    SiluMul,
    /// paged_decode's partition kernel for head tiles of 1, 2, 4 and 8.
    PagedDecodeH1,
    PagedDecodeH2,
    PagedDecodeH4,
    PagedDecodeH8,
    PagedDecodeReduce,
    PagedPrefill,
    Sample,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Func {
    pub(crate) const ALL: [Func; 10] = [
        Func::AddRmsNorm,
        Func::RopeAndCache,
        Func::SiluMul,
        Func::PagedDecodeH1,
        Func::PagedDecodeH2,
        Func::PagedDecodeH4,
        Func::PagedDecodeH8,
        Func::PagedDecodeReduce,
        Func::PagedPrefill,
        Func::Sample,
    ];

    /// The PTX module (kernels/MODULE.cu) and the function's name before its dtype suffix.
    pub(crate) fn names(self) -> (&'static str, &'static str) {
        match self {
            Func::AddRmsNorm => ("add_rms_norm", "add_rms_norm"),
            Func::RopeAndCache => ("rope_and_cache", "rope_and_cache"),
            Func::SiluMul => ("silu_mul", "silu_mul"),
            Func::PagedDecodeH1 => ("paged_decode", "paged_decode_h1"),
            Func::PagedDecodeH2 => ("paged_decode", "paged_decode_h2"),
            Func::PagedDecodeH4 => ("paged_decode", "paged_decode_h4"),
            Func::PagedDecodeH8 => ("paged_decode", "paged_decode_h8"),
            Func::PagedDecodeReduce => ("paged_decode", "paged_decode_reduce"),
            Func::PagedPrefill => ("paged_prefill", "paged_prefill"),
            Func::Sample => ("sample", "sample"),
        }
    }

    /// paged_decode's partition kernel for a head tile of `h` (1, 2, 4 or 8).
    pub(crate) fn paged_decode(h: usize) -> Func {
        match h {
            1 => Func::PagedDecodeH1,
            2 => Func::PagedDecodeH2,
            4 => Func::PagedDecodeH4,
            _ => Func::PagedDecodeH8,
        }
    }
}

/// The dtypes of the table's columns, in order.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The column of `dtype` (`None`: not a kernel dtype).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn dtype_index(dtype: DType) -> Option<usize> {
    DTYPES.iter().position(|&d| d == dtype)
}

/// The kernel functions of one device, loaded once (see the module doc). Cheap to clone
/// (shared); empty on the CPU and by default.
#[derive(Clone, Default)]
pub struct Kernels {
    #[cfg(feature = "cuda")]
    pub(crate) table: Option<std::sync::Arc<crate::cuda::Table>>,
}

impl Kernels {
    /// No table: every launch looks its function up (what the plain op functions use).
    pub const NONE: Kernels = Kernels {
        #[cfg(feature = "cuda")]
        table: None,
    };

    /// Load every function of the table on `device` (nothing on the CPU). On CUDA this
    /// loads (JIT-compiles) the PTX modules involved, once per device.
    pub fn load(device: &Device) -> crate::Result<Self> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => Ok(Kernels {
                table: Some(std::sync::Arc::new(crate::cuda::Table::load(dev)?)),
            }),
            _ => Ok(Kernels::default()),
        }
    }

    /// Functions held (0 on the CPU or without a table).
    pub fn len(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(t) = &self.table {
            return t.len();
        }
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({} functions)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_table_holds_nothing() -> anyhow::Result<()> {
        let k = Kernels::load(&Device::Cpu)?;
        assert!(k.is_empty());
        assert_eq!(format!("{k:?}"), "Kernels(0 functions)");
        Ok(())
    }

    #[test]
    fn every_function_names_a_module_and_paged_decode_tiles_map() {
        for f in Func::ALL {
            let (module, stem) = f.names();
            assert!(stem.starts_with(module), "{f:?}");
        }
        let tiles: Vec<Func> = [1, 2, 4, 8].map(Func::paged_decode).into();
        assert_eq!(
            tiles,
            [
                Func::PagedDecodeH1,
                Func::PagedDecodeH2,
                Func::PagedDecodeH4,
                Func::PagedDecodeH8
            ]
        );
        assert_eq!(dtype_index(DType::BF16), Some(2));
        assert_eq!(dtype_index(DType::U32), None);
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_table_loads_every_function_once() -> anyhow::Result<()> {
        let k = Kernels::load(&Device::new_cuda(0)?)?;
        assert_eq!(k.len(), Func::ALL.len() * DTYPES.len());
        Ok(())
    }

    #[test]
    #[ignore = "requires a CUDA device"]
    fn cuda_table_launches_equal_looked_up_launches() -> anyhow::Result<()> {
        use crate::harness::{host_f32, random_input};
        let dev = Device::new_cuda(0)?;
        let k = Kernels::load(&dev)?;
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for dtype in DTYPES {
            let (g, _) = random_input(&[7, 96], 2.0, 1, dtype, &dev)?;
            let a = host_f32(&k.silu_mul(&g)?)?;
            assert_eq!(bits(a), bits(host_f32(&Kernels::NONE.silu_mul(&g)?)?));
            let (x, _) = random_input(&[5, 64], 2.0, 2, dtype, &dev)?;
            let (r, _) = random_input(&[5, 64], 2.0, 3, dtype, &dev)?;
            let (w, _) = random_input(&[64], 1.0, 4, dtype, &dev)?;
            let (a, _) = k.add_rms_norm(&x, &r, &w, 1e-5)?;
            let (b, _) = Kernels::NONE.add_rms_norm(&x, &r, &w, 1e-5)?;
            assert_eq!(bits(host_f32(&a)?), bits(host_f32(&b)?), "{dtype:?}");
        }
        Ok(())
    }
}
