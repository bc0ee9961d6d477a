//! The `Idempotency-Key` header of `POST /ledger` (IETF httpapi draft "The Idempotency-Key HTTP
//! Header Field"): finding the field among a request's and reading the key in it; framing, routing
//! and the response each take what they need from here, and this module needs none of them. The store that remembers keys and
//! their responses is `loopkit::idempotency`; the server-side meaning is in docs/spec.md.
//!
//! The field's value is a Structured Field String (RFC 8941 §3.3.3): `Idempotency-Key:
//! "8e03978e-40d5-43e8"`. A bare token without the quotes (`Idempotency-Key: 8e03978e`), which many
//! clients send, is taken as the same key.

use std::borrow::Cow;

/// The longest key kept, in bytes after unquoting (Stripe's limit).
pub const MAX_KEY_BYTES: usize = 255;

/// The header a response carries when it is the kept response of an earlier request, given again.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed: true";

/// The raw value of the request's `Idempotency-Key` field, if it has one; a second one is refused
/// with the reason (the field is a single Item, RFC 8941 §3.3, and which of two to believe cannot
/// be known).
pub(crate) fn key_field<'b>(fields: &[httparse::Header<'b>]) -> Result<Option<&'b [u8]>, &'static str> {
    let mut found = None;
    for field in fields.iter().filter(|field| field.name.eq_ignore_ascii_case("idempotency-key")) {
        if found.is_some() {
            return Err("Idempotency-Key sent more than once");
        }
        found = Some(field.value);
    }
    Ok(found)
}

/// The key an `Idempotency-Key` value names: an sf-string unquoted and unescaped, or a bare token.
pub fn parse_key(value: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    const BAD: &str = "Idempotency-Key must be a quoted string (RFC 8941) or a token of visible ASCII";
    let key = match value {
        [b'"', inner @ .., b'"'] => {
            if !inner.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
                return Err(BAD);
            }
            match inner.contains(&b'\\') {
                false if inner.contains(&b'"') => return Err(BAD),
                false => Cow::Borrowed(inner),
                true => Cow::Owned(unescape(inner).ok_or(BAD)?),
            }
        }
        [b'"', ..] => return Err(BAD),
        token if token.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'"') => Cow::Borrowed(token),
        _ => return Err(BAD),
    };
    match key.len() {
        0 => Err("Idempotency-Key is empty"),
        len if len > MAX_KEY_BYTES => Err("Idempotency-Key over 255 bytes"),
        _ => Ok(key),
    }
}

/// The inside of an sf-string with its `\"` and `\\` escapes undone; any other escape, or a bare
/// `"`, is invalid.
fn unescape(inner: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => out.push(escaped),
                _ => return None,
            },
            b'"' => return None,
            b => out.push(b),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sf_strings_or_bare_tokens() {
        assert_eq!(parse_key(b"\"abc-1\"").unwrap(), &b"abc-1"[..]);
        assert_eq!(parse_key(b"abc-1").unwrap(), &b"abc-1"[..]);
        assert_eq!(parse_key(br#""a \"b\" \\c""#).unwrap(), &br#"a "b" \c"#[..]);
        assert!(matches!(parse_key(b"\"a\"").unwrap(), Cow::Borrowed(_)));
        for bad in
            [&b""[..], b"\"\"", b"\"abc", b"a b", b"\"a\\x\"", b"\"a\"b\"", b"\"\xc3\xa9\"", b"\"a\\\""]
        {
            assert!(parse_key(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_key(&[b'k'; 255]).is_ok());
        assert_eq!(parse_key(&[b'k'; 256]), Err("Idempotency-Key over 255 bytes"));
    }
}
