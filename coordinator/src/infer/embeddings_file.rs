//! Embeddings as files: CSV (a row per input, its name first) or NumPy's `.npy` (float32,
//! images x width, little-endian), written by hand since the format is a short text header.

use std::io::Write;
use std::path::Path;

/// Writes `rows` (one name per embedding) as CSV: `input,e0,e1,...`.
pub fn write_csv(
    out: &mut impl Write,
    names: &[String],
    values: &[f32],
    width: usize,
) -> std::io::Result<()> {
    let header: Vec<String> = (0..width).map(|i| format!("e{i}")).collect();
    writeln!(out, "input,{}", header.join(","))?;
    for (name, row) in names.iter().zip(values.chunks_exact(width.max(1))) {
        // Quoted when it holds a comma or quote, as CSV readers expect.
        let name = match name.contains([',', '"']) {
            true => format!("\"{}\"", name.replace('"', "\"\"")),
            false => name.clone(),
        };
        let row: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        writeln!(out, "{name},{}", row.join(","))?;
    }
    Ok(())
}

/// The bytes of a version 1.0 `.npy` file of `rows x width` float32 values.
pub fn npy_bytes(values: &[f32], rows: usize, width: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {width}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded with spaces and ended by a
    // newline to a multiple of 64 bytes, as the format asks.
    let unpadded = 10 + dict.len() + 1;
    let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
    let mut out = Vec::with_capacity(10 + header_len + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes the embeddings to `path`: `.npy` by its extension, CSV otherwise.
pub fn write_file(
    path: &Path,
    names: &[String],
    values: &[f32],
    width: usize,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if npy {
        return std::fs::write(path, npy_bytes(values, names.len(), width));
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    write_csv(&mut out, names, values, width)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_values_follow() {
        let bytes = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(
            &bytes[10 + header_len..10 + header_len + 4],
            &1.0f32.to_le_bytes()
        );
        assert_eq!(bytes.len(), 10 + header_len + 24);
    }

    #[test]
    fn csv_has_a_header_and_quotes_odd_names() {
        let mut out = Vec::new();
        write_csv(
            &mut out,
            &["a.png".into(), "b,c.png".into()],
            &[0.5, -1.0, 2.0, 0.25],
            2,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "input,e0,e1\na.png,0.5,-1\n\"b,c.png\",2,0.25\n"
        );
    }
}
