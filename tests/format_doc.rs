//! `docs/FORMAT.md` against the code: its worked example must be the bytes
//! the encoder produces today, and every annotated field must say what those
//! bytes hold. A format change that forgets the document fails here.
//!
//! The document marks its example with `<!-- hex-example -->` (a ```text
//! block in `xxd -g 1` layout) and `<!-- hex-annotations -->` (a Markdown
//! table, one row per field).

use std::path::Path;
use std::sync::Arc;

use enforcelog::format::{decode_batch, encode_batch, SegmentHeader, SEGMENT_HEADER_LEN};
use enforcelog::storage::sim::SimStorage;
use enforcelog::{Log, Record};

const HEX_MARKER: &str = "<!-- hex-example -->";
const TABLE_MARKER: &str = "<!-- hex-annotations -->";
/// Bytes per line of an `xxd -g 1` dump.
const LINE_BYTES: usize = 16;

fn format_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The worked example's segment header: the store whose id is
/// `0123456789abcdef0123456789abcdef`.
const EXAMPLE_HEADER: SegmentHeader = SegmentHeader {
    store_tag: 0x89ab_cdef,
    base_offset: 0,
};

/// The records of the worked example.
fn example_records() -> Vec<Record> {
    vec![
        Record::new(1_764_028_800_000_000, b"BLOCKED".to_vec()),
        Record::new(1_764_028_800_000_001, b"KILLED".to_vec()),
    ]
}

/// What the encoder writes for the worked example.
fn encoded_example() -> Vec<u8> {
    let mut bytes = EXAMPLE_HEADER.encode().to_vec();
    encode_batch(&mut bytes, 0, &example_records());
    bytes
}

/// The lines after `marker`, from the line after it up to (not including)
/// the first line for which `end` is true.
fn lines_after<'a>(doc: &'a str, marker: &str, end: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    assert!(
        lines.next().is_some(),
        "docs/FORMAT.md has no line `{marker}`"
    );
    lines.take_while(|l| !end(l)).collect()
}

/// The printable form `xxd` shows of a byte.
fn printable(b: u8) -> char {
    if (0x20..0x7f).contains(&b) {
        b as char
    } else {
        '.'
    }
}

/// Parses the dump after the hex-example marker, checking its layout: each
/// line's position, at most 16 bytes per line (16 on all but the last), and
/// the ASCII column.
fn doc_hex_example(doc: &str) -> Vec<u8> {
    let mut block = lines_after(doc, HEX_MARKER, |l| l.trim() == "```").into_iter();
    assert_eq!(
        block.next().map(str::trim),
        Some("```text"),
        "a ```text block must follow `{HEX_MARKER}`"
    );
    let lines: Vec<&str> = block.collect();
    assert!(!lines.is_empty(), "the hex example is empty");
    let mut bytes = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let (position, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("hex line {n} has no `position: `: {line:?}"));
        let position = usize::from_str_radix(position, 16)
            .unwrap_or_else(|e| panic!("hex line {n}: bad position {position:?}: {e}"));
        assert_eq!(
            position,
            bytes.len(),
            "hex line {n} starts at the wrong position"
        );
        // `xxd -g 1`: 16 columns of "xx ", one more space, then the ASCII.
        let hex_width = LINE_BYTES * 3;
        let (hex, ascii) = rest.split_at(rest.len().min(hex_width));
        let line_bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|t| {
                assert_eq!(t.len(), 2, "hex line {n}: {t:?} is not one byte");
                u8::from_str_radix(t, 16)
                    .unwrap_or_else(|e| panic!("hex line {n}: bad byte {t:?}: {e}"))
            })
            .collect();
        let is_last = n + 1 == lines.len();
        assert!(
            line_bytes.len() == LINE_BYTES || (is_last && !line_bytes.is_empty()),
            "hex line {n} holds {} bytes",
            line_bytes.len()
        );
        let shown: String = line_bytes.iter().map(|&b| printable(b)).collect();
        assert_eq!(
            ascii.strip_prefix(' ').unwrap_or(ascii),
            shown,
            "hex line {n}: the ASCII column does not match the bytes"
        );
        bytes.extend(line_bytes);
    }
    bytes
}

/// One row of the annotation table.
#[derive(Debug)]
struct Row {
    dec: usize,
    hex: String,
    size: usize,
    field: String,
    kind: String,
    bytes: String,
    value: String,
}

fn doc_annotations(doc: &str) -> Vec<Row> {
    let lines = lines_after(doc, TABLE_MARKER, |l| !l.trim_start().starts_with('|'));
    assert!(
        lines.len() > 2,
        "a table with a header row must follow `{TABLE_MARKER}`"
    );
    lines[2..]
        .iter()
        .map(|line| {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            assert_eq!(cells.len(), 7, "annotation row has 7 cells: {line}");
            let number = |cell: &str| -> usize {
                cell.parse()
                    .unwrap_or_else(|e| panic!("bad number {cell:?} in {line}: {e}"))
            };
            Row {
                dec: number(&cells[0]),
                hex: cells[1].clone(),
                size: number(&cells[2]),
                field: cells[3].clone(),
                kind: cells[4].clone(),
                bytes: cells[5].replace('`', ""),
                value: cells[6].clone(),
            }
        })
        .collect()
}

/// The first token of a value cell, without its backticks.
fn leading_token(value: &str) -> &str {
    value
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches('`')
}

/// Parses "bytes A..B" out of a checksum's value cell.
fn covered_range(value: &str) -> std::ops::Range<usize> {
    let (_, after) = value
        .split_once("bytes ")
        .unwrap_or_else(|| panic!("checksum value {value:?} names no `bytes A..B`"));
    let range = after.split_whitespace().next().unwrap_or("");
    let (start, end) = range
        .split_once("..")
        .unwrap_or_else(|| panic!("bad range {range:?} in {value:?}"));
    let parse = |s: &str| -> usize {
        s.trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or_else(|e| panic!("bad range {range:?} in {value:?}: {e}"))
    };
    parse(start)..parse(end)
}

/// Checks that a row's value cell says what its bytes hold.
fn check_value(row: &Row, field: &[u8], segment: &[u8]) {
    let token = leading_token(&row.value);
    let what = format!("row `{}` at {}", row.field, row.dec);
    let fixed = |n: usize| -> Vec<u8> {
        assert_eq!(row.size, n, "{what}: a {} is {n} bytes", row.kind);
        field.to_vec()
    };
    match row.kind.as_str() {
        "ascii" => {
            let text = token.trim_matches('"');
            assert_eq!(text.as_bytes(), field, "{what}: the string differs");
        }
        "zero" => assert!(field.iter().all(|&b| b == 0), "{what}: not zero"),
        "u16" => {
            let b = fixed(2);
            let v = u16::from_le_bytes([b[0], b[1]]);
            assert_eq!(token, v.to_string(), "{what}: value differs");
        }
        "u32" => {
            let v = u32::from_le_bytes(fixed(4).try_into().unwrap());
            assert_eq!(token, v.to_string(), "{what}: value differs");
        }
        "u64" => {
            let v = u64::from_le_bytes(fixed(8).try_into().unwrap());
            assert_eq!(token, v.to_string(), "{what}: value differs");
        }
        "i64" => {
            let v = i64::from_le_bytes(fixed(8).try_into().unwrap());
            assert_eq!(token, v.to_string(), "{what}: value differs");
        }
        "crc32" => {
            let v = u32::from_le_bytes(fixed(4).try_into().unwrap());
            assert_eq!(token, format!("{v:#010x}"), "{what}: value differs");
            let range = covered_range(&row.value);
            assert!(range.end <= segment.len(), "{what}: range past the end");
            assert_eq!(
                crc32fast::hash(&segment[range.clone()]),
                v,
                "{what}: not the CRC-32 of bytes {range:?}"
            );
        }
        other => panic!("{what}: unknown type {other:?}"),
    }
}

#[test]
fn hex_example_is_what_the_encoder_writes() {
    let doc = format_doc();
    let documented = doc_hex_example(&doc);
    let encoded = encoded_example();
    assert_eq!(
        documented, encoded,
        "docs/FORMAT.md's hex example differs from the encoder's bytes; regenerate it"
    );
}

#[test]
fn hex_example_decodes_to_the_two_records() {
    let bytes = doc_hex_example(&format_doc());
    assert_eq!(SegmentHeader::decode(&bytes), Ok(EXAMPLE_HEADER));
    let batch = decode_batch(&bytes[SEGMENT_HEADER_LEN..], Some(0))
        .unwrap_or_else(|e| panic!("the example's batch does not decode: {e:?}"));
    assert_eq!(
        SEGMENT_HEADER_LEN + batch.len(),
        bytes.len(),
        "the batch must end the example"
    );
    let decoded: Vec<(u64, Record)> = batch
        .frames()
        .map(|f| (f.offset, Record::new(f.timestamp_us, f.payload.to_vec())))
        .collect();
    let expected: Vec<(u64, Record)> = (0..).zip(example_records()).collect();
    assert_eq!(decoded, expected);
}

#[test]
fn hex_example_annotations_match_the_bytes() {
    let doc = format_doc();
    let segment = doc_hex_example(&doc);
    let rows = doc_annotations(&doc);
    let mut next = 0;
    for row in &rows {
        assert_eq!(
            row.dec, next,
            "row `{}` must start where the previous field ends",
            row.field
        );
        assert_eq!(
            row.hex,
            format!("{:#04x}", row.dec),
            "row `{}`: hex and decimal positions differ",
            row.field
        );
        let end = row.dec + row.size;
        assert!(
            end <= segment.len(),
            "row `{}` runs past the end",
            row.field
        );
        let field = &segment[row.dec..end];
        let shown: Vec<String> = field.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            row.bytes,
            shown.join(" "),
            "row `{}`: bytes column differs from the dump",
            row.field
        );
        check_value(row, field, &segment);
        next = end;
    }
    assert_eq!(next, segment.len(), "the annotations must cover every byte");
}

#[test]
fn hex_example_opens_as_a_log_directory() {
    // The directory layout FORMAT.md describes: a VERSION file, the store
    // id whose tag the segment carries, and the segment named by its base
    // offset.
    let storage = SimStorage::new(0);
    storage.write_file("/log/VERSION", b"enforcelog-log 1\n");
    storage.write_file("/log/STORE_ID", b"0123456789abcdef0123456789abcdef\n");
    storage.write_file(
        "/log/00000000000000000000.log",
        &doc_hex_example(&format_doc()),
    );
    let log = Log::open_read_only_with_storage(Arc::new(storage), "/log")
        .unwrap_or_else(|e| panic!("the example does not open: {e}"));
    assert_eq!(log.next_offset(), 2);
    let read: Vec<(u64, i64, Vec<u8>)> = log
        .read_from(0)
        .unwrap()
        .map(|r| r.map(|r| (r.offset, r.timestamp_us, r.payload)))
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(u64, i64, Vec<u8>)> = (0..)
        .zip(example_records())
        .map(|(offset, r)| (offset, r.timestamp_us, r.payload))
        .collect();
    assert_eq!(read, expected);
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.batches, report.records), (1, 2));
}
