//! Macros the instruction sets' tiles share.

/// The tile over panels (`crate::panels`) for `R` activation rows at a time (then single rows):
/// the kernels `dot_q4_0` … `dot_q5_1` of the SIMD module `$($m)::+`, generic over the rows and
/// `$flag` (VNNI on x86, the dot-product extension on aarch64), inlined into the function it
/// expands in, so they take its target features. The caller's contract: the CPU has those
/// features; `$w` is whole panel rows of `$ty` (`$bpr` panels each) and `$acts` holds
/// `$out.n` rows of `$bpr` blocks of the activation type `$ty` pairs with.
macro_rules! panel_tile {
    (
        $($m:ident)::+, $r:literal, $flag:literal,
        $ty:expr, $w:expr, $rb:expr, $acts:expr, $bpr:expr, $out:expr
    ) => {{
        use $($m)::+ as p;
        let (w, rb, bpr, out): (&[u8], usize, usize, &$crate::matrix::OutTile) =
            ($w, $rb, $bpr, $out);
        macro_rules! rows {
            ($a:expr, $dot:ident) => {
                // SAFETY: the caller's contract; `w` is whole panel rows of `bpr` panels and
                // each activation row `bpr` blocks.
                $crate::matrix::panel_loop::<_, $r>(
                    w,
                    rb,
                    $a,
                    bpr,
                    out,
                    |w, a| unsafe { p::$dot::<$r, $flag>(w, a) },
                    |w, a| {
                        // SAFETY: as above.
                        unsafe { p::$dot::<1, $flag>(w, [a])[0] }
                    },
                )
            };
        }
        let acts: &$crate::activation::QuantizedActivations = $acts;
        let (q8_0, q8_1) = (acts.q8_0_rows(), acts.q8_1_rows());
        match $ty {
            $crate::format::QuantType::Q4_0 => rows!(q8_0, dot_q4_0),
            $crate::format::QuantType::Q5_0 => rows!(q8_0, dot_q5_0),
            $crate::format::QuantType::Q8_0 => rows!(q8_0, dot_q8_0),
            $crate::format::QuantType::Q4_1 => rows!(q8_1, dot_q4_1),
            $crate::format::QuantType::Q5_1 => rows!(q8_1, dot_q5_1),
            _ => {}
        }
    }};
}
