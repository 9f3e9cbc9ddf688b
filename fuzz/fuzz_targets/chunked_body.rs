//! The chunked-body decoder must never panic, and must produce the same body whether its input
//! arrives in one piece or byte by byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::wire::http1::{ChunkedDecoder, Decoded};

fn decode(pieces: &mut dyn Iterator<Item = &[u8]>) -> Result<Option<Vec<u8>>, ()> {
    let mut decoder = ChunkedDecoder::new(4096);
    let mut buffer = BytesMut::new();
    let mut body = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer).map_err(|_| ())? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::NeedMore => break,
                Decoded::Done => return Ok(Some(body)),
            }
        }
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(&mut std::iter::once(data));
    let bytewise = decode(&mut data.chunks(1));
    assert_eq!(whole, bytewise);
});
