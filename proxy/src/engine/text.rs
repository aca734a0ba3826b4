//! Text as a client's encoding sends it. PostgreSQL converts every text to
//! the session's `client_encoding`, which need not be UTF-8 (`LATIN1`,
//! `WIN1252`, `EUC_JP`, ...): bytes that are not UTF-8 are decoded here one
//! byte to one character, so that no two different texts read alike (a
//! lossy decoding would make `é` and `è` in LATIN1 both U+FFFD) and the
//! bytes can be had back exactly ([`bytes_of`]).
//!
//! In every encoding PostgreSQL accepts from a client except the few
//! client-only ones (`SJIS`, `BIG5`, `GBK`, `UHC`, `GB18030`, `JOHAB`), a
//! byte below 0x80 is always the ASCII character, so SQL's quotes,
//! separators and keywords read right in such a decoding.

use std::borrow::Cow;

/// `raw` as text: UTF-8 when it is, else one character per byte.
pub fn lossless(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(raw.iter().map(|&b| b as char).collect()),
    }
}

/// The bytes a text decoded by [`lossless`] from non-UTF-8 bytes came
/// from (characters up to U+00FF are one byte each; others, which only
/// turnout's own words can hold, as UTF-8).
pub fn bytes_of(decoded: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(decoded.len());
    for c in decoded.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// Client encodings in which a byte of a multibyte character can be an
/// ASCII byte (a backslash or a quote): text in them cannot be read byte
/// by byte.
/// The first word of `sql`, lower-case (its letters up to the first
/// other character): `"fetch"` for `FETCH ALL FROM c`.
pub fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

pub fn ascii_unsafe_encoding(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(
        n.as_str(),
        "SJIS"
            | "SHIFTJIS"
            | "SHIFTJIS2004"
            | "MSKANJI"
            | "BIG5"
            | "GBK"
            | "CP936"
            | "UHC"
            | "GB18030"
            | "JOHAB"
            | "WIN932"
            | "WIN936"
            | "WIN949"
            | "WIN950"
    )
}

/// Whether a `client_encoding` value is UTF-8 (or plain ASCII, whose
/// bytes are UTF-8 too).
pub fn is_utf8(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(n.as_str(), "UTF8" | "UNICODE" | "SQLASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_exactly_and_differ_when_they_differ() {
        let latin1 = b"caf\xe9 \xe8";
        let text = lossless(latin1);
        assert_eq!(text, "café è");
        assert_eq!(bytes_of(&text), latin1);
        assert_ne!(lossless(b"\xe9"), lossless(b"\xe8"));
        assert_eq!(lossless("é".as_bytes()), "é");
        assert!(ascii_unsafe_encoding("Shift_JIS") && ascii_unsafe_encoding("sjis"));
        assert!(!ascii_unsafe_encoding("LATIN1") && !ascii_unsafe_encoding("EUC_JP"));
        assert!(is_utf8("utf-8") && is_utf8("UTF8") && !is_utf8("LATIN1"));
    }
}
