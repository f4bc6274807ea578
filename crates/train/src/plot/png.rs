//! PNG encoding of an RGB image: IHDR, one IDAT (zlib), IEND.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::ZlibEncoder;

use crate::error::{Result, TrainError};

pub(super) const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// `rgb` (rows from the top, 3 bytes a pixel) as a PNG: 8-bit RGB, no interlacing, filter
/// type 0 (none) on every row, one IDAT chunk.
pub(super) fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let row = width * 3;
    if width == 0 || height == 0 || rgb.len() != row * height {
        return Err(TrainError::Plot(format!(
            "{} bytes of pixels for a {width}×{height} RGB image",
            rgb.len()
        )));
    }
    let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(TrainError::Plot(format!(
            "{width}×{height} is too large for PNG"
        )));
    };
    let mut raw = Vec::with_capacity(height * (row + 1));
    for line in rgb.chunks_exact(row) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    let idat = z
        .write_all(&raw)
        .and_then(|()| z.finish())
        .map_err(|e| TrainError::Plot(format!("compressing the image: {e}")))?;

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr)?;
    chunk(&mut out, b"IDAT", &idat)?;
    chunk(&mut out, b"IEND", &[])?;
    Ok(out)
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| TrainError::Plot(format!("a {}-byte PNG chunk", data.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    Ok(())
}
