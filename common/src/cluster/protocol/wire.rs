//! Float vectors on the wire: little-endian `f32` bytes.

/// Encodes floats as little-endian bytes.
pub fn encode_f32(values: &[f32]) -> prost::bytes::Bytes {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: any f32 is four initialised bytes, u8 has no alignment requirement, and on a
        // little-endian target the in-memory bytes are the wire's little-endian encoding.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        prost::bytes::Bytes::copy_from_slice(bytes)
    }
    #[cfg(not(target_endian = "little"))]
    {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
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
