//! NATS subjects for shipped entries.
//!
//! ```text
//! <prefix>.ev.<tenant>.<rule>     an event
//! <prefix>.gap.<store id>         a gap marker
//! ```
//!
//! A subject token may not be empty nor hold `.`, `*`, `>` or whitespace,
//! and ids may hold any of them, so every id is written as a token of bytes
//! `[A-Za-z0-9_-]` kept as they are and every other byte as `%XX` (upper-case
//! hex). The encoding is reversible and keeps ASCII ids readable:
//! `acme.prod` becomes `acme%2Eprod`. A NATS wildcard such as
//! `enforcelog.ev.acme%2Eprod.>` then selects one tenant exactly.

/// The token for `id` (never empty: ids are 1..=128 bytes).
pub fn encode_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The id a token encodes, if it is one [`encode_token`] makes.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = token.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The subject of an event of `tenant` and `rule`.
pub fn event_subject(prefix: &str, tenant: &str, rule: &str) -> String {
    format!(
        "{prefix}.ev.{}.{}",
        encode_token(tenant),
        encode_token(rule)
    )
}

/// The subject of a gap marker of the store `store_id`.
pub fn gap_subject(prefix: &str, store_id: &str) -> String {
    format!("{prefix}.gap.{}", encode_token(store_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hold_no_subject_syntax() {
        for id in [
            "acme",
            "acme.prod",
            "a*b>c",
            "with space",
            "é",
            "%41",
            "a\tb",
            "-_",
        ] {
            let token = encode_token(id);
            assert!(!token.is_empty());
            assert!(
                !token.contains(['.', '*', '>', ' ', '\t']),
                "{id:?} -> {token:?}"
            );
            assert_eq!(decode_token(&token).as_deref(), Some(id), "{token}");
        }
        assert_eq!(encode_token("acme.prod"), "acme%2Eprod");
        assert_eq!(decode_token("a%2"), None);
        assert_eq!(decode_token("a%zz"), None);
        assert_eq!(decode_token("a.b"), None);
    }

    #[test]
    fn distinct_ids_get_distinct_subjects() {
        let a = event_subject("enforcelog", "a.b", "c");
        let b = event_subject("enforcelog", "a", "b.c");
        assert_ne!(a, b);
        assert_eq!(a, "enforcelog.ev.a%2Eb.c");
    }
}
