//! A binary built with the `cuda` feature on a machine without the NVIDIA driver: opening the
//! GPU is an error that says what is missing, not a crash; and the kernels compile with NVRTC
//! for every GPU generation forja targets (`scripts/test` runs this in CI, with NVRTC from its
//! PyPI package: `scripts/cuda/nvrtc`).

#![cfg(feature = "cuda")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

#[test]
fn opening_a_gpu_without_the_driver_says_what_is_missing() {
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        println!("this machine has the NVIDIA driver: nothing to check here");
        return;
    }
    let e = forja_kernels::cuda::Gpu::open(0).unwrap_err();
    assert!(matches!(e, forja_kernels::KernelError::NoDevice(_)), "{e}");
    assert!(e.to_string().contains("libcuda.so.1"), "{e}");
}

/// NVRTC needs no GPU: every kernel compiles for sm_75 (Turing: the tensor-core tiles compile to
/// a trap there and are never launched), sm_80/86/89 and sm_90, alone and with the tensor-core
/// kernels, and the PTX defines each kernel forja launches. Where NVRTC is missing this says so and passes, except in CI, which installs
/// it.
#[test]
fn the_kernels_compile_for_every_gpu_generation() {
    use forja_kernels::cuda::{compile_kernels, kernel_names};
    for (cap, quantized) in [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)]
        .into_iter()
        .flat_map(|c| [(c, false), (c, true)])
    {
        let ptx = match compile_kernels(cap, quantized) {
            Err(forja_kernels::KernelError::NoDevice(why)) if std::env::var_os("CI").is_none() => {
                println!("{why}: run scripts/cuda/nvrtc and put its output on LD_LIBRARY_PATH");
                return;
            }
            r => r.unwrap_or_else(|e| panic!("sm_{}{}: {e}", cap.0, cap.1)),
        };
        let src = ptx.to_src();
        assert!(
            src.contains(&format!(".target sm_{}{}", cap.0, cap.1)),
            "sm_{}{}",
            cap.0,
            cap.1
        );
        for name in kernel_names(quantized) {
            assert!(
                src.contains(&format!(".entry {name}(")),
                "sm_{}{}: no kernel {name}",
                cap.0,
                cap.1
            );
        }
        let n = kernel_names(quantized).len();
        let what = if quantized { "with" } else { "without" };
        println!(
            "sm_{}{} {what} the tensor-core kernels: {n} kernels, {} bytes of PTX",
            cap.0,
            cap.1,
            src.len()
        );
    }
}

/// Every kernel a GGUF block type's products name is one the GPU loads (and so one the test
/// above finds in the compiled PTX).
#[test]
fn every_block_type_has_its_kernels_loaded() {
    use forja_kernels::cuda::{QuantKind, kernel_names};
    let names = kernel_names(true);
    for kind in QuantKind::ALL {
        for one in [true, false] {
            let (name, _) = kind.gemv_kernel(one);
            assert!(names.contains(&name), "{kind:?}: {name} is not loaded");
        }
        for rows in [1, 9, 17, 33] {
            let (name, _) = kind.mmq_kernel(rows);
            assert!(names.contains(&name), "{kind:?}: {name} is not loaded");
        }
    }
}

/// The PTX a GPU process compiles is kept for the next one: a second call reads the file the
/// first wrote (the same PTX NVRTC gives), another architecture gets a file of its own, a
/// damaged file is compiled again and replaced, and a cache folder that cannot be written
/// costs only the compilation. Where NVRTC is missing this says so and passes, except in CI.
#[test]
fn compiled_kernels_are_kept_for_the_next_run_and_damaged_copies_replaced() {
    use forja_kernels::cuda::{PtxOrigin, compile_kernels, kernels_ptx};
    let dir = std::env::temp_dir().join(format!("forja-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cap = (8, 0);
    let (first, origin) = match kernels_ptx(cap, false, Some(&dir), false) {
        Err(forja_kernels::KernelError::NoDevice(why)) if std::env::var_os("CI").is_none() => {
            println!("{why}: run scripts/cuda/nvrtc and put its output on LD_LIBRARY_PATH");
            return;
        }
        r => r.unwrap(),
    };
    let first = first.to_src();
    assert_eq!(origin, PtxOrigin::Compiled);
    assert_eq!(first, compile_kernels(cap, false).unwrap().to_src());
    let files = || {
        let mut f: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    };
    let kept = files();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].extension().is_some_and(|e| e == "ptx"), "{kept:?}");

    let (again, origin) = kernels_ptx(cap, false, Some(&dir), false).unwrap();
    assert_eq!(origin, PtxOrigin::Cached);
    assert_eq!(again.to_src(), first);

    let (_, origin) = kernels_ptx((9, 0), false, Some(&dir), false).unwrap();
    assert_eq!(origin, PtxOrigin::Compiled);
    assert_eq!(files().len(), 2);

    std::fs::write(&kept[0], &first[..first.len() / 2]).unwrap();
    let (mended, origin) = kernels_ptx(cap, false, Some(&dir), false).unwrap();
    assert_eq!(origin, PtxOrigin::Compiled);
    assert_eq!(mended.to_src(), first);
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), first);

    let (_, origin) = kernels_ptx(cap, false, Some(&dir), true).unwrap();
    assert_eq!(origin, PtxOrigin::Compiled, "fresh compiles");

    let blocked = dir.join("a-file");
    std::fs::write(&blocked, "not a folder").unwrap();
    let (ptx, origin) = kernels_ptx(cap, false, Some(&blocked.join("kernels")), false).unwrap();
    assert_eq!((ptx.to_src(), origin), (first, PtxOrigin::Compiled));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How attention launches are laid out (host arithmetic, no GPU): a decode row of Llama-3-8B's
/// 32/8 heads takes its KV group's four heads a block and is split to fill the GPU; a launch of
/// many long prompt rows is split only as shared memory requires, with one head a block, so the
/// parts' partial sums stay within what one head a block needs (grouping them would need up to
/// four times as many parts: 1.5 GB more for 2,048 rows at 131,072 positions).
#[test]
fn attention_launches_group_heads_and_bound_their_partial_sums() {
    use forja_kernels::cuda::{attention_partials_len, attention_split};
    let kb48 = 48 << 10;
    let decode = attention_split(1, 32, 8, 128, 16_384, kb48);
    assert_eq!(decode.group, 4);
    assert!(decode.parts >= 32, "{decode:?}");
    assert_eq!(decode.parts, 16_384usize.div_ceil(decode.part));
    // 256 rows after 2,000 positions: enough blocks, the group's scores fit whole.
    let batch = attention_split(256, 32, 8, 128, 2000, kb48);
    assert_eq!((batch.group, batch.parts), (4, 1), "{batch:?}");
    // A long prompt's rows: one head a block, the fewest parts shared memory allows.
    let prompt = attention_split(2048, 32, 8, 128, 131_072, kb48);
    assert_eq!(prompt.group, 1, "{prompt:?}");
    let one_head = ((48 << 10) - 512) / 4 - 128;
    assert_eq!(prompt.parts, 131_072usize.div_ceil(one_head), "{prompt:?}");
    let len = attention_partials_len(2048, 32, 8, 128, 131_072, kb48);
    assert_eq!(
        len,
        2048 * 32 * prompt.parts * 130,
        "the launch of the most rows needs the most"
    );
    assert!(len * 4 < 500 << 20, "{len} partial values");
}

/// With more shared memory a block, 256 rows of 4,096 positions keep their KV group's four heads
/// a block (one read of K and V for four heads) where 48 KiB allows two; 100 KiB by default
/// where the device allows it; a setting is checked against what the device allows.
#[test]
fn more_shared_memory_keeps_long_rows_grouped() {
    use forja_kernels::cuda::{attention_shared_bytes, attention_split};
    let at = |kib: usize| attention_split(256, 32, 8, 128, 4096, kib << 10);
    assert_eq!((at(48).group, at(48).parts), (2, 1), "{:?}", at(48));
    assert_eq!((at(100).group, at(100).parts), (4, 1), "{:?}", at(100));
    // Launches that leave SMs idle keep the parts 48 KiB allows: more blocks fill the GPU.
    let split = |kib: usize| attention_split(64, 32, 8, 128, 8192, kib << 10);
    assert_eq!(split(100), split(48));
    assert_eq!(
        (split(100).group, split(100).parts),
        (4, 3),
        "{:?}",
        split(100)
    );
    let h200 = 227 << 10;
    assert_eq!(attention_shared_bytes(h200, None).unwrap(), 100 << 10);
    assert_eq!(
        attention_shared_bytes(99 << 10, None).unwrap(),
        99 << 10,
        "sm_86 / sm_89"
    );
    assert_eq!(
        attention_shared_bytes(h200, Some("100")).unwrap(),
        100 << 10
    );
    for (bad, says) in [
        ("300", "48 to 227 KiB"),
        ("32", "48 to 227 KiB"),
        ("lots", "whole number"),
    ] {
        let e = attention_shared_bytes(h200, Some(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
