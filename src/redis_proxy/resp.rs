//! A sans-IO RESP2 parser (arrays of bulk strings and inline commands) and
//! the reply encoder.
//!
//! The parser is incremental: [`Parser::parse`] consumes what it can from the
//! front of a buffer and remembers a half-read array between calls, so a
//! large pipelined command arriving in many reads is parsed in linear time.
//! It never panics on any input; malformed input yields a
//! [`ProtocolError`] whose `Display` is Redis's wording (the server sends it
//! as `-ERR Protocol error: ...` and closes the connection, as Redis does).

/// Largest bulk string accepted in a command. Redis allows 512 MiB; the
/// proxy bounds it lower because a Markab write is bounded far lower
/// (the client's `request_bytes_max`, 1 MiB by default) anyway.
pub const BULK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most arguments in one array command (Redis allows 1024 * 1024 * 1024;
/// the proxy bounds the memory one command may pin).
pub const ARRAY_LEN_MAX: usize = 1024 * 1024;
/// Longest inline command line, and longest `*N` / `$N` header line
/// (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of all arguments of one command together.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(BULK_BYTES_MAX <= COMMAND_BYTES_MAX);
const _: () = assert!(INLINE_BYTES_MAX <= BULK_BYTES_MAX);

/// Why the input is not RESP. `Display` is the text after Redis's
/// `Protocol error: ` prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("too big inline request")]
    InlineTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("too big mbulk count string")]
    ArrayHeaderTooBig,
    #[error("invalid multibulk length")]
    InvalidArrayLength,
    #[error("too big bulk count string")]
    BulkHeaderTooBig,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("command larger than {COMMAND_BYTES_MAX} bytes")]
    CommandTooBig,
}

/// A command's arguments, its name first.
pub type CommandArgs = Vec<Vec<u8>>;

/// What one call to [`Parser::parse`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes to drop from the front of the buffer (also when no command was
    /// completed: the parser keeps what it read in its own state).
    pub consumed: usize,
    /// A complete command (its arguments, the name first), if one ended.
    pub command: Option<Vec<Vec<u8>>>,
}

/// An array command being read.
#[derive(Debug, Default)]
struct Partial {
    expected: usize,
    args: Vec<Vec<u8>>,
    bytes: usize,
}

/// Incremental RESP2 request parser; one per connection.
#[derive(Debug, Default)]
pub struct Parser {
    partial: Option<Partial>,
}

impl Parser {
    /// A parser with nothing pending.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses from the front of `buffer`. Returns how many bytes to drop
    /// and the command completed, if any; call again (after dropping) while
    /// it completes commands. Empty inline lines and `*0` arrays are skipped
    /// silently, as Redis does.
    pub fn parse(&mut self, buffer: &[u8]) -> Result<Parsed, ProtocolError> {
        let mut position = 0;
        loop {
            if self.partial.is_none() {
                let Some(&first) = buffer.get(position) else {
                    return Ok(Parsed {
                        consumed: position,
                        command: None,
                    });
                };
                if first != b'*' {
                    return match parse_inline(&buffer[position..])? {
                        None => Ok(Parsed {
                            consumed: position,
                            command: None,
                        }),
                        Some((args, used)) => {
                            position += used;
                            if args.is_empty() {
                                continue;
                            }
                            Ok(Parsed {
                                consumed: position,
                                command: Some(args),
                            })
                        }
                    };
                }
                let Some((line, used)) = read_line(&buffer[position..]) else {
                    if buffer.len() - position > INLINE_BYTES_MAX {
                        return Err(ProtocolError::ArrayHeaderTooBig);
                    }
                    return Ok(Parsed {
                        consumed: position,
                        command: None,
                    });
                };
                let length = parse_length(&line[1..]).ok_or(ProtocolError::InvalidArrayLength)?;
                position += used;
                if length <= 0 {
                    continue;
                }
                let length =
                    usize::try_from(length).map_err(|_| ProtocolError::InvalidArrayLength)?;
                if length > ARRAY_LEN_MAX {
                    return Err(ProtocolError::InvalidArrayLength);
                }
                self.partial = Some(Partial {
                    expected: length,
                    args: Vec::with_capacity(length.min(1024)),
                    bytes: 0,
                });
            }
            let Some(partial) = self.partial.as_mut() else {
                continue;
            };
            while partial.args.len() < partial.expected {
                let rest = &buffer[position..];
                let Some((line, used)) = read_line(rest) else {
                    if rest.len() > INLINE_BYTES_MAX {
                        return Err(ProtocolError::BulkHeaderTooBig);
                    }
                    return Ok(Parsed {
                        consumed: position,
                        command: None,
                    });
                };
                if line.first() != Some(&b'$') {
                    let got = line.first().map_or(' ', |&byte| byte as char);
                    return Err(ProtocolError::ExpectedBulk(got));
                }
                let length = parse_length(&line[1..])
                    .and_then(|length| usize::try_from(length).ok())
                    .filter(|&length| length <= BULK_BYTES_MAX)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                if partial.bytes + length > COMMAND_BYTES_MAX {
                    return Err(ProtocolError::CommandTooBig);
                }
                // The bulk and its CRLF must be here before the header is
                // consumed; until then the header is re-read next call.
                let body = &rest[used..];
                if body.len() < length + 2 {
                    return Ok(Parsed {
                        consumed: position,
                        command: None,
                    });
                }
                partial.args.push(body[..length].to_vec());
                partial.bytes += length;
                position += used + length + 2;
            }
            let done = self.partial.take().map(|partial| partial.args);
            return Ok(Parsed {
                consumed: position,
                command: done,
            });
        }
    }
}

/// The line at the front of `input` without its `\r\n` (or `\n`), and the
/// bytes it takes with the terminator.
fn read_line(input: &[u8]) -> Option<(&[u8], usize)> {
    let end = input.iter().position(|&byte| byte == b'\n')?;
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, end + 1))
}

/// A decimal length of a `*` or `$` header (Redis's `string2ll`).
fn parse_length(text: &[u8]) -> Option<i64> {
    parse_redis_integer(text)
}

/// Parses an integer exactly as Redis's `string2ll` does: optional `-`,
/// no leading zeros (except "0" itself), no `+`, no spaces, within i64.
pub fn parse_redis_integer(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// One inline command line: its arguments and the bytes it takes, `None`
/// while the line is incomplete.
fn parse_inline(input: &[u8]) -> Result<Option<(CommandArgs, usize)>, ProtocolError> {
    let Some((line, used)) = read_line(input) else {
        if input.len() > INLINE_BYTES_MAX {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if line.len() > INLINE_BYTES_MAX {
        return Err(ProtocolError::InlineTooBig);
    }
    let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    Ok(Some((args, used)))
}

/// Splits an inline command like Redis's `sdssplitargs`: whitespace
/// separates; double quotes allow `\n \r \t \b \a \\ \" \xHH`; single quotes
/// allow `\'`; a closing quote must be followed by whitespace or the end.
/// `None` on unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut index = 0;
    loop {
        while index < line.len() && line[index].is_ascii_whitespace() {
            index += 1;
        }
        if index >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let byte = line.get(index).copied();
            if in_double {
                match byte {
                    None => return None,
                    Some(b'\\')
                        if index + 3 < line.len()
                            && line[index + 1] == b'x'
                            && line[index + 2].is_ascii_hexdigit()
                            && line[index + 3].is_ascii_hexdigit() =>
                    {
                        let high = hex_value(line[index + 2]);
                        let low = hex_value(line[index + 3]);
                        current.push(high * 16 + low);
                        index += 3;
                    }
                    Some(b'\\') if index + 1 < line.len() => {
                        index += 1;
                        current.push(match line[index] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        let next = line.get(index + 1);
                        if next.is_some_and(|byte| !byte.is_ascii_whitespace()) {
                            return None;
                        }
                        index += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_single {
                match byte {
                    None => return None,
                    Some(b'\\') if line.get(index + 1) == Some(&b'\'') => {
                        index += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        let next = line.get(index + 1);
                        if next.is_some_and(|byte| !byte.is_ascii_whitespace()) {
                            return None;
                        }
                        index += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match byte {
                    None => break,
                    Some(byte) if byte.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            index += 1;
        }
        args.push(current);
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text` (must not contain CR or LF).
    Simple(&'static str),
    /// `-text` (the text starts with the error kind, e.g. `ERR ...`).
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` and the bytes.
    Bulk(Vec<u8>),
    /// `$-1`
    Nil,
    /// `*n` and the elements.
    Array(Vec<Reply>),
}

impl Reply {
    /// `+OK`
    pub const OK: Reply = Reply::Simple("OK");

    /// An error reply; CR and LF in `text` become spaces so the reply stays
    /// one line.
    pub fn error(text: impl Into<String>) -> Reply {
        let text: String = text.into();
        Reply::Error(text.replace(['\r', '\n'], " "))
    }

    /// Appends the encoded reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(text) => {
                out.push(b'-');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(value) => {
                out.push(b':');
                out.extend_from_slice(value.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(bytes) => {
                out.push(b'$');
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                out.push(b'*');
                out.extend_from_slice(items.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut parser = Parser::new();
        let mut buffer = input.to_vec();
        let mut commands = Vec::new();
        loop {
            let parsed = parser.parse(&buffer)?;
            buffer.drain(..parsed.consumed);
            match parsed.command {
                Some(command) => commands.push(command),
                None => return Ok(commands),
            }
        }
    }

    fn args(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.as_bytes().to_vec()).collect()
    }

    #[test]
    fn array_commands_pipelined() {
        // Several array commands in one buffer come out in order, binary-safe.
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n";
        let commands = parse_all(input).unwrap();
        assert_eq!(
            commands,
            vec![args(&["GET", "k"]), args(&["SET", "k", "a\r\nb"])]
        );
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        // Feeding a pipeline one byte at a time yields the same commands as feeding it whole.
        let input: &[u8] =
            b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\nset a \"x y\"\r\n*1\r\n$4\r\nPING\r\n";
        let whole = parse_all(input).unwrap();
        let mut parser = Parser::new();
        let mut buffer = Vec::new();
        let mut pieces = Vec::new();
        for &byte in input {
            buffer.push(byte);
            loop {
                let parsed = parser.parse(&buffer).unwrap();
                buffer.drain(..parsed.consumed);
                match parsed.command {
                    Some(command) => pieces.push(command),
                    None => break,
                }
            }
        }
        assert!(buffer.is_empty());
        assert_eq!(whole, pieces);
        assert_eq!(whole.len(), 4);
    }

    #[test]
    fn inline_quoting() {
        // Inline commands split on spaces and honour Redis's quoting and escapes.
        let commands = parse_all(b"SET k \"a b\\x41\\n\" 'it\\'s'\r\n\r\nGET k\n").unwrap();
        assert_eq!(
            commands,
            vec![
                vec![
                    b"SET".to_vec(),
                    b"k".to_vec(),
                    b"a bA\n".to_vec(),
                    b"it's".to_vec()
                ],
                args(&["GET", "k"])
            ]
        );
        assert_eq!(
            parse_all(b"SET k \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"SET k \"abc\"d\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        // Bad lengths and missing '$' give Redis's protocol errors, never a panic.
        assert_eq!(parse_all(b"*x\r\n"), Err(ProtocolError::InvalidArrayLength));
        assert_eq!(
            parse_all(b"*9999999999\r\n"),
            Err(ProtocolError::InvalidArrayLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n+GET\r\n"),
            Err(ProtocolError::ExpectedBulk('+'))
        );
        assert_eq!(
            parse_all(b"*1\r\n$-1\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        let too_big = format!("*1\r\n${}\r\n", BULK_BYTES_MAX + 1);
        assert_eq!(
            parse_all(too_big.as_bytes()),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n").unwrap(),
            Vec::<Vec<Vec<u8>>>::new()
        );
    }

    #[test]
    fn unterminated_lines_are_bounded() {
        // A line with no newline is an error once it passes the inline bound.
        let long = vec![b'a'; INLINE_BYTES_MAX + 1];
        assert_eq!(parse_all(&long), Err(ProtocolError::InlineTooBig));
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; INLINE_BYTES_MAX + 1]);
        assert_eq!(parse_all(&header), Err(ProtocolError::ArrayHeaderTooBig));
        let short = vec![b'a'; 100];
        assert_eq!(parse_all(&short).unwrap().len(), 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        // Arbitrary byte soup either parses or errors, and consumption never exceeds the input.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..(state % 64) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(b"*$\r\n0123-x\" '\\"[(state % 14) as usize]);
            }
            let mut parser = Parser::new();
            if let Ok(parsed) = parser.parse(&input) {
                assert!(parsed.consumed <= input.len());
            }
        }
    }

    #[test]
    fn redis_integer_rules() {
        // Integers parse exactly like Redis's string2ll.
        assert_eq!(parse_redis_integer(b"0"), Some(0));
        assert_eq!(parse_redis_integer(b"-12"), Some(-12));
        assert_eq!(parse_redis_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_redis_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1.5",
            b"9223372036854775808",
            b"-",
        ] {
            assert_eq!(parse_redis_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoder_shapes() {
        // Every reply kind encodes to RESP2 bytes.
        let mut out = Vec::new();
        Reply::Array(vec![
            Reply::OK,
            Reply::error("ERR a\r\nb"),
            Reply::Integer(-3),
            Reply::Bulk(b"hi".to_vec()),
            Reply::Nil,
        ])
        .encode(&mut out);
        assert_eq!(
            out,
            b"*5\r\n+OK\r\n-ERR a  b\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n".to_vec()
        );
    }
}
