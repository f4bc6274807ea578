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
}

impl Isa {
    /// The fastest instruction set this CPU runs, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Isa::Avx512.is_available() {
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
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// Every instruction set this CPU can run, the portable one first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
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
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512 => scalar_dot(ty, w, a),
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

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds at least `a`'s number of `ty` blocks.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_dot(ty: QuantType, w: &[u8], a: ActRow<'_>) -> f32 {
    use crate::x86::{kquants as k, legacy as l};
    // SAFETY: forwarded contract.
    unsafe {
        match (ty, a) {
            (QuantType::Q4_0, ActRow::Q8_0(a)) => l::dot_q4_0(w, [a])[0],
            (QuantType::Q5_0, ActRow::Q8_0(a)) => l::dot_q5_0(w, [a])[0],
            (QuantType::Q8_0, ActRow::Q8_0(a)) => l::dot_q8_0(w, [a])[0],
            (QuantType::Q4_1, ActRow::Q8_1(a)) => l::dot_q4_1(w, [a])[0],
            (QuantType::Q5_1, ActRow::Q8_1(a)) => l::dot_q5_1(w, [a])[0],
            (QuantType::Q2K, ActRow::Q8K(a)) => k::dot_q2k(w, [a])[0],
            (QuantType::Q3K, ActRow::Q8K(a)) => k::dot_q3k(w, [a])[0],
            (QuantType::Q4K, ActRow::Q8K(a)) => k::dot_q4k(w, [a])[0],
            (QuantType::Q5K, ActRow::Q8K(a)) => k::dot_q5k(w, [a])[0],
            (QuantType::Q6K, ActRow::Q8K(a)) => k::dot_q6k(w, [a])[0],
            _ => f32::NAN,
        }
    }
}
