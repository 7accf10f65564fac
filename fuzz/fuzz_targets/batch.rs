//! Batch decoding: never panics; a batch that decodes has dense offsets and
//! re-encodes to exactly its bytes.
#![no_main]

use enforcelog::format::{decode_batch, encode_batch};
use enforcelog::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = decode_batch(data, None) {
        let first = view.header.first_offset;
        let records: Vec<Record> = view
            .frames()
            .enumerate()
            .map(|(i, f)| {
                assert_eq!(f.offset, first + i as u64);
                Record::new(f.timestamp_us, f.payload.to_vec())
            })
            .collect();
        let mut again = Vec::new();
        encode_batch(&mut again, first, &records);
        assert_eq!(again, view.bytes());
    }
});
