//! Index file decoding: never panics; what decodes re-encodes to the same bytes.
#![no_main]

use enforcelog::format::index_file::SegmentIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(index) = SegmentIndex::decode(data) {
        assert_eq!(index.encode(), data);
    }
});
