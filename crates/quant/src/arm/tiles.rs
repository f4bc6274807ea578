//! The NEON tiles of [`crate::QMatrix`]'s product: the kernels of this module's siblings over a
//! tile's rows, four activation rows per weight block (a block widened once serves four), each
//! compiled into a function with the target features it needs (the panels through the
//! `panel_tile!` the x86 tiles use too).

use crate::activation::QuantizedActivations;
use crate::format::QuantType;
use crate::matrix::{OutTile, scalar_tile, tile_loop};

/// Activation rows each weight block is multiplied with before the next is loaded.
const R: usize = 4;

/// The tile of rows in the grouped layout (`Q4_K`, `Q5_K`, `Q6_K`) for `DOT`; the other types, whose
/// rows here are in GGUF order, go to the portable tile.
macro_rules! rows {
    ($dot:literal, $ty:expr, $w:expr, $rb:expr, $acts:expr, $bpr:expr, $out:expr) => {{
        use super::grouped as g;
        let (ty, w, rb, bpr, out): (QuantType, &[u8], usize, usize, &OutTile) =
            ($ty, $w, $rb, $bpr, $out);
        let acts: &QuantizedActivations = $acts;
        let q8k = acts.q8k_rows();
        macro_rules! grouped {
            ($kernel:ident) => {
                // SAFETY: the caller's contract; each `w` row holds `bpr` grouped blocks and each
                // activation row `bpr` grouped blocks.
                tile_loop::<_, R>(
                    w,
                    rb,
                    q8k,
                    bpr,
                    out,
                    |w, a| unsafe { g::$kernel::<R, $dot>(w, a) },
                    |w, a| {
                        // SAFETY: as above.
                        unsafe { g::$kernel::<1, $dot>(w, [a])[0] }
                    },
                )
            };
        }
        match ty {
            QuantType::Q4K => grouped!(dot_q4k),
            QuantType::Q5K => grouped!(dot_q5k),
            QuantType::Q6K => grouped!(dot_q6k),
            _ => scalar_tile(ty, w, rb, acts, bpr, out),
        }
    }};
}

/// Panels on NEON.
///
/// # Safety
/// The CPU has NEON; `w` is whole panel rows of `ty` (`bpr` panels each) and `acts` holds
/// `out.n` rows of `bpr` blocks of the activation type `ty` pairs with.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn neon_panels(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    panel_tile!(crate::arm::panels, 4, false, ty, w, rb, acts, bpr, out)
}

/// Panels with the dot-product extension.
///
/// # Safety
/// As [`neon_panels`], and the CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot_panels(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    panel_tile!(crate::arm::panels, 4, true, ty, w, rb, acts, bpr, out)
}

/// Rows outside panels on NEON.
///
/// # Safety
/// The CPU has NEON; `w` is whole rows of `ty` (grouped for the grouped types), `bpr` blocks
/// each, and `acts` holds `out.n` rows of `bpr` blocks of the activation type `ty` pairs with
/// (in the grouped order for the grouped types).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn neon_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    rows!(false, ty, w, rb, acts, bpr, out)
}

/// Rows outside panels with the dot-product extension.
///
/// # Safety
/// As [`neon_tile`], and the CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot_tile(
    ty: QuantType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActivations,
    bpr: usize,
    out: &OutTile,
) {
    rows!(true, ty, w, rb, acts, bpr, out)
}
