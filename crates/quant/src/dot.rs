//! Instruction-set selection and the one entry point for a single row · row dot product.

use std::sync::OnceLock;

use crate::activation::ActRow;
use crate::error::{QuantError, Result};
use crate::format::QuantType;
use crate::{kquants, legacy};

/// The instruction set the dot-product kernels run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, on every CPU (vectorized only as far as the compiler manages).
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen and later), detected at run time.
    Avx2,
    /// The AVX2 kernels compiled for AVX-512 (F, VL, BW): 32 vector registers, so a weight
    /// block is multiplied with eight activation rows at once instead of four.
    Avx512,
    /// [`Isa::Avx512`] plus VNNI: one `vpdpbusd` multiplies and sums four byte pairs where AVX2
    /// takes `vpmaddubsw` + `vpmaddwd` (Ice Lake, Zen 4 and later).
    Avx512Vnni,
    /// The AVX2 kernels with AVX-VNNI's `vpdpbusd` on 256-bit registers, for CPUs that have it
    /// without AVX-512 (Alder Lake and later Intel cores, Zen 5 desktop parts).
    AvxVnni,
    /// aarch64 NEON, which every 64-bit Arm CPU has: the block types kept in panels and the
    /// grouped `Q4_K`/`Q5_K`/`Q6_K` (the others, and single GGUF-order rows, run the portable code,
    /// which the compiler vectorizes for NEON).
    Neon,
    /// [`Isa::Neon`] with the dot-product extension (`sdot`: four byte products summed per
    /// lane in one instruction; Apple M1, Graviton 2, Cortex-A76 and later), detected at run
    /// time.
    NeonDot,
}

impl Isa {
    /// The fastest instruction set this CPU runs, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Isa::NeonDot.is_available() {
                Isa::NeonDot
            } else if Isa::Neon.is_available() {
                Isa::Neon
            } else if Isa::Avx512Vnni.is_available() {
                Isa::Avx512Vnni
            } else if Isa::AvxVnni.is_available() {
                Isa::AvxVnni
            } else if Isa::Avx512.is_available() {
                Isa::Avx512
            } else if Isa::Avx2.is_available() {
                Isa::Avx2
            } else {
                Isa::Scalar
            }
        })
    }

    /// Whether this CPU can run kernels of this instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::x86::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::x86::available_avx512(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => crate::x86::available_vnni(),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => crate::x86::available_avx_vnni(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::AvxVnni => false,
            Isa::Neon => cfg!(target_arch = "aarch64"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => crate::arm::available_dot(),
            #[cfg(not(target_arch = "aarch64"))]
            Isa::NeonDot => false,
        }
    }

    /// Every instruction set this CPU can run, the portable one first.
    pub fn available() -> Vec<Isa> {
        [
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512,
            Isa::Avx512Vnni,
            Isa::AvxVnni,
            Isa::Neon,
            Isa::NeonDot,
        ]
        .into_iter()
        .filter(|i| i.is_available())
        .collect()
    }

    pub(crate) fn check(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(QuantError::Unsupported(format!("{self:?} on this CPU")))
        }
    }
}

/// The dot product of one weight row (`w`, whole blocks of `ty`) with one quantized
/// activation row of the type `ty` pairs with, on `isa`.
pub fn vec_dot(isa: Isa, ty: QuantType, w: &[u8], a: ActRow<'_>) -> Result<f32> {
    isa.check()?;
    if ty.activation() != Some(a.activation_type()) {
        return Err(QuantError::Unsupported(format!(
            "a dot product of {ty} weights with {:?} activations",
            a.activation_type()
        )));
    }
    if w.len() != a.num_blocks() * ty.block_bytes() {
        return Err(QuantError::Shape(format!(
            "{} bytes of {ty} weights against {} activation blocks",
            w.len(),
            a.num_blocks()
        )));
    }
    Ok(match isa {
        Isa::Scalar => scalar_dot(ty, w, a),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` confirmed AVX2/FMA/F16C; `w` holds exactly `a`'s number of blocks.
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2_dot(ty, w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` confirmed AVX-512 VNNI as well.
        Isa::Avx512Vnni => unsafe { vnni_dot(ty, w, a) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` confirmed AVX2/FMA/F16C and AVX-VNNI.
        Isa::AvxVnni => unsafe { avx_vnni_dot(ty, w, a) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::AvxVnni => scalar_dot(ty, w, a),
        // A single row in GGUF order: the portable kernels (NEON serves the layouts the
        // matrix keeps).
        Isa::Neon | Isa::NeonDot => scalar_dot(ty, w, a),
    })
}

fn scalar_dot(ty: QuantType, w: &[u8], a: ActRow<'_>) -> f32 {
    match (ty, a) {
        (QuantType::Q4_0, ActRow::Q8_0(a)) => legacy::dot_q4_0(w, a),
        (QuantType::Q5_0, ActRow::Q8_0(a)) => legacy::dot_q5_0(w, a),
        (QuantType::Q8_0, ActRow::Q8_0(a)) => legacy::dot_q8_0(w, a),
        (QuantType::Q4_1, ActRow::Q8_1(a)) => legacy::dot_q4_1(w, a),
        (QuantType::Q5_1, ActRow::Q8_1(a)) => legacy::dot_q5_1(w, a),
        (QuantType::Q2K, ActRow::Q8K(a)) => kquants::dot_q2k(w, a),
        (QuantType::Q3K, ActRow::Q8K(a)) => kquants::dot_q3k(w, a),
        (QuantType::Q4K, ActRow::Q8K(a)) => kquants::dot_q4k(w, a),
        (QuantType::Q5K, ActRow::Q8K(a)) => kquants::dot_q5k(w, a),
        (QuantType::Q6K, ActRow::Q8K(a)) => kquants::dot_q6k(w, a),
        // `vec_dot` checked the pairing.
        _ => f32::NAN,
    }
}

/// The x86 single-row dot product, the kernels inlined into the function it expands in;
/// `$vnni` is the kernels' `VNNI` parameter (`crate::x86::NO_VNNI`, `VNNI_512`, `VNNI_VEX`:
/// 0, 1, 2).
#[cfg(target_arch = "x86_64")]
macro_rules! x86_dot {
    ($vnni:literal, $ty:expr, $w:expr, $a:expr) => {{
        use crate::x86::{kquants as k, legacy as l};
        let (w, a): (&[u8], ActRow<'_>) = ($w, $a);
        // SAFETY: the caller's contract: the CPU has the features of the function this expands
        // in, and `w` holds at least `a`'s number of `ty` blocks.
        unsafe {
            match ($ty, a) {
                (QuantType::Q4_0, ActRow::Q8_0(a)) => l::dot_q4_0::<1, $vnni>(w, [a])[0],
                (QuantType::Q5_0, ActRow::Q8_0(a)) => l::dot_q5_0::<1, $vnni>(w, [a])[0],
                (QuantType::Q8_0, ActRow::Q8_0(a)) => l::dot_q8_0::<1, $vnni>(w, [a])[0],
                (QuantType::Q4_1, ActRow::Q8_1(a)) => l::dot_q4_1::<1, $vnni>(w, [a])[0],
                (QuantType::Q5_1, ActRow::Q8_1(a)) => l::dot_q5_1::<1, $vnni>(w, [a])[0],
                (QuantType::Q2K, ActRow::Q8K(a)) => k::dot_q2k(w, [a])[0],
                (QuantType::Q3K, ActRow::Q8K(a)) => k::dot_q3k(w, [a])[0],
                (QuantType::Q4K, ActRow::Q8K(a)) => k::dot_q4k(w, [a])[0],
                (QuantType::Q5K, ActRow::Q8K(a)) => k::dot_q5k(w, [a])[0],
                (QuantType::Q6K, ActRow::Q8K(a)) => k::dot_q6k(w, [a])[0],
                _ => f32::NAN,
            }
        }
    }};
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds at least `a`'s number of `ty` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_dot(ty: QuantType, w: &[u8], a: ActRow<'_>) -> f32 {
    x86_dot!(0, ty, w, a)
}

/// # Safety
/// As [`avx2_dot`], and the CPU has AVX-VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn avx_vnni_dot(ty: QuantType, w: &[u8], a: ActRow<'_>) -> f32 {
    x86_dot!(2, ty, w, a)
}

/// # Safety
/// As [`avx2_dot`], and the CPU has AVX-512 F, VL, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn vnni_dot(ty: QuantType, w: &[u8], a: ActRow<'_>) -> f32 {
    x86_dot!(1, ty, w, a)
}
