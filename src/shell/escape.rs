//! Binary-safe command lines: tokenizing with quotes and escapes, and
//! printing bytes so the output can be pasted back.
//!
//! Tokens are separated by unquoted whitespace. Inside or outside double
//! quotes these escapes are understood: `\\` `\"` `\n` `\t` `\r` `\0`
//! `\xHH` (two hex digits, any byte) and `\ ` (a space). Quotes may
//! surround any part of a token; `""` is an empty token.

/// Why a command line could not be tokenized. Positions are 1-based
/// character columns of the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    #[error("unknown escape \\{escape} at column {column}")]
    UnknownEscape { escape: char, column: usize },
    #[error("\\x at column {column} must be followed by two hex digits")]
    BadHexEscape { column: usize },
    #[error("the line ends inside an escape started at column {column}")]
    TrailingBackslash { column: usize },
    #[error("the quote opened at column {column} is never closed")]
    UnclosedQuote { column: usize },
}

/// Splits `line` into byte-string tokens.
///
/// ```
/// use markab::shell::escape::tokenize;
/// let tokens = tokenize(r#"set "my key" a\x00b"#).unwrap();
/// assert_eq!(tokens, vec![b"set".to_vec(), b"my key".to_vec(), b"a\0b".to_vec()]);
/// ```
pub fn tokenize(line: &str) -> Result<Vec<Vec<u8>>, EscapeError> {
    let mut tokens = Vec::new();
    let mut token: Vec<u8> = Vec::new();
    // A token has started (so `""` yields an empty token).
    let mut in_token = false;
    let mut quote_column: Option<usize> = None;
    let mut chars = line.chars().enumerate().peekable();
    while let Some((index, character)) = chars.next() {
        let column = index + 1;
        match character {
            '\\' => {
                in_token = true;
                let Some((_, escape)) = chars.next() else {
                    return Err(EscapeError::TrailingBackslash { column });
                };
                match escape {
                    '\\' => token.push(b'\\'),
                    '"' => token.push(b'"'),
                    'n' => token.push(b'\n'),
                    't' => token.push(b'\t'),
                    'r' => token.push(b'\r'),
                    '0' => token.push(0),
                    ' ' => token.push(b' '),
                    'x' => {
                        let high = chars.next().and_then(|(_, c)| c.to_digit(16));
                        let low = chars.next().and_then(|(_, c)| c.to_digit(16));
                        match (high, low) {
                            (Some(high), Some(low)) => token.push((high * 16 + low) as u8),
                            _ => return Err(EscapeError::BadHexEscape { column }),
                        }
                    }
                    other => {
                        return Err(EscapeError::UnknownEscape {
                            escape: other,
                            column,
                        })
                    }
                }
            }
            '"' => {
                in_token = true;
                quote_column = match quote_column {
                    Some(_) => None,
                    None => Some(column),
                };
            }
            c if c.is_whitespace() && quote_column.is_none() => {
                if in_token {
                    tokens.push(std::mem::take(&mut token));
                    in_token = false;
                }
            }
            c => {
                in_token = true;
                let mut buffer = [0u8; 4];
                token.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    if let Some(column) = quote_column {
        return Err(EscapeError::UnclosedQuote { column });
    }
    if in_token {
        tokens.push(token);
    }
    Ok(tokens)
}

/// Writes `bytes` escaped: printable ASCII as is (`\` and `"` escaped),
/// every other byte as `\xHH`. Put the result in double quotes to paste it
/// back as one token.
///
/// ```
/// use markab::shell::escape::escape;
/// assert_eq!(escape(b"a \"b\"\n\xff"), r#"a \"b\"\x0A\xFF"#);
/// ```
pub fn escape(bytes: &[u8]) -> String {
    let mut escaped = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'\\' => escaped.push_str("\\\\"),
            b'"' => escaped.push_str("\\\""),
            0x20..=0x7e => escaped.push(byte as char),
            _ => {
                use std::fmt::Write;
                let _ = write!(escaped, "\\x{byte:02X}");
            }
        }
    }
    escaped
}

/// `bytes` escaped and wrapped in double quotes.
pub fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves every byte value survives escape → quote → tokenize unchanged.
    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(tokenize(&quote(&all)).unwrap(), vec![all.clone()]);
        for byte in 0..=255u8 {
            let single = vec![byte];
            assert_eq!(
                tokenize(&quote(&single)).unwrap(),
                vec![single],
                "byte {byte}"
            );
        }
    }

    // Proves whitespace splits tokens only outside quotes, quotes can cover
    // part of a token, and "" is an empty token.
    #[test]
    fn quoting_and_splitting() {
        let tokens = tokenize(r#"  get "a b"  c"d e"f "" x\ y "#).unwrap();
        let expected: Vec<Vec<u8>> = vec![
            b"get".to_vec(),
            b"a b".to_vec(),
            b"cd ef".to_vec(),
            Vec::new(),
            b"x y".to_vec(),
        ];
        assert_eq!(tokens, expected);
        assert!(tokenize("   ").unwrap().is_empty());
    }

    // Proves the named escapes decode to their bytes.
    #[test]
    fn named_escapes() {
        let tokens = tokenize(r#"\\\"\n\t\r\0\x7f\xAb"#).unwrap();
        assert_eq!(tokens, vec![b"\\\"\n\t\r\0\x7f\xab".to_vec()]);
    }

    // Proves non-ASCII input characters pass through as their UTF-8 bytes.
    #[test]
    fn utf8_passes_through() {
        assert_eq!(tokenize("é").unwrap(), vec!["é".as_bytes().to_vec()]);
    }

    // Proves malformed escapes and quotes are errors naming their column.
    #[test]
    fn errors_name_the_column() {
        assert_eq!(
            tokenize(r"ab \q").unwrap_err(),
            EscapeError::UnknownEscape {
                escape: 'q',
                column: 4
            }
        );
        assert_eq!(
            tokenize(r"\xG1").unwrap_err(),
            EscapeError::BadHexEscape { column: 1 }
        );
        assert_eq!(
            tokenize(r"a\x1").unwrap_err(),
            EscapeError::BadHexEscape { column: 2 }
        );
        assert_eq!(
            tokenize(r"abc\").unwrap_err(),
            EscapeError::TrailingBackslash { column: 4 }
        );
        assert_eq!(
            tokenize(r#"set "abc"#).unwrap_err(),
            EscapeError::UnclosedQuote { column: 5 }
        );
        let message = tokenize(r"ab \q").unwrap_err().to_string();
        assert!(message.contains("column 4"), "{message}");
    }

    // Proves printable ASCII is printed as is and everything else as \xHH.
    #[test]
    fn escape_format() {
        assert_eq!(escape(b"Hello, world~"), "Hello, world~");
        assert_eq!(escape(b"\x00\x1f\x7f\x80"), r"\x00\x1F\x7F\x80");
        assert_eq!(escape(b"\\\""), r#"\\\""#);
    }
}
