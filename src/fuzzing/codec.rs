//! The value codecs' decode path (src/codec.rs): the first byte picks a codec by its
//! wire number (unknown numbers must be refused), the rest is a frame from a peer.
//! Rules: no panic; a decoded value is never longer than the limit; a value encoded
//! from the frame's bytes decodes back to them.

use crate::codec::Codec;

/// The decode limit: a group's largest value.
const LIMIT: usize = 64 << 10;

/// One input: a codec number, then the bytes to decode.
pub fn codec(data: &[u8]) {
    let Some((&number, packed)) = data.split_first() else {
        return;
    };
    let codec = match Codec::from_wire(i32::from(number % 8)) {
        Ok(codec) => codec,
        Err(_) => return,
    };
    if let Ok(raw) = codec.decode(packed, LIMIT) {
        assert!(raw.len() <= LIMIT, "{codec} decoded {} bytes", raw.len());
    }
    if let Some(encoded) = codec.encode(packed) {
        assert_eq!(
            codec.decode(&encoded, packed.len()).unwrap(),
            packed,
            "{codec}"
        );
    }
}
