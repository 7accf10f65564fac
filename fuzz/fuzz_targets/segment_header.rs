//! Segment header decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use enforcelog::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        assert_eq!(header.encode()[..], data[..SEGMENT_HEADER_LEN]);
    }
});
