//! Float vectors on the wire: little-endian `f32` bytes.

/// Encodes floats as little-endian bytes.
pub fn encode_f32(values: &[f32]) -> prost::bytes::Bytes {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.into()
}

/// Decodes little-endian bytes into floats; `None` when the length is not a multiple of 4.
pub fn decode_f32(bytes: &[u8]) -> Option<Vec<f32>> {
    let (chunks, rest) = bytes.as_chunks::<4>();
    if !rest.is_empty() {
        return None;
    }
    Some(chunks.iter().map(|c| f32::from_le_bytes(*c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_odd_length() {
        let v = [1.5f32, -0.0, f32::MAX, 3.25e-7];
        assert_eq!(decode_f32(&encode_f32(&v)).unwrap(), v);
        assert!(decode_f32(&[0, 0, 0, 0, 1]).is_none());
    }
}
