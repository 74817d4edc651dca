//! Client input quoted back in error messages: short and escaped, never whole.
//!
//! An error that echoes what the client sent costs what the client sent: a 10 KB gzip body
//! whose `events` is a 10 MB string once made a 10 MB `400` per connection, held for as
//! long as the client did not read it. Every message that may carry client input goes
//! through here.

/// Most bytes of client input quoted in one error message.
pub const MAX_EXCERPT_BYTES: usize = 100;

/// `input` as an error may quote it: at most [`MAX_EXCERPT_BYTES`] of it, with quotes,
/// backslashes and control characters escaped, and how much was left out.
pub fn excerpt(input: &str) -> String {
    let cut = floor_char_boundary(input, MAX_EXCERPT_BYTES);
    let mut out: String = input[..cut].escape_debug().collect();
    if cut < input.len() {
        out.push_str(&format!("…({} more bytes)", input.len() - cut));
    }
    out
}

/// A message that may embed client input somewhere inside (serde_json's errors quote the
/// value they did not expect, already escaped): control characters escaped, and when long,
/// its start and end kept (the end says where: "at line 1 column 9") with the middle cut.
pub fn shorten(message: &str) -> String {
    let limit = 2 * MAX_EXCERPT_BYTES;
    let escape = |s: &str| -> String {
        s.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_debug().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    };
    if message.len() <= limit {
        return escape(message);
    }
    let head = floor_char_boundary(message, MAX_EXCERPT_BYTES);
    let tail = ceil_char_boundary(message, message.len() - MAX_EXCERPT_BYTES);
    format!(
        "{}…({} bytes)…{}",
        escape(&message[..head]),
        tail - head,
        escape(&message[tail..])
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("a\"b\n"), "a\\\"b\\n");
        let long = "é".repeat(1000);
        let short = excerpt(&long);
        assert!(short.len() < MAX_EXCERPT_BYTES + 30, "{short}");
        assert!(short.ends_with("…(1900 more bytes)"), "{short}");
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        let message = format!(
            "invalid type: string \"{}\", expected x at line 1 column 9",
            "x".repeat(1 << 20)
        );
        let short = shorten(&message);
        assert!(short.len() < 3 * MAX_EXCERPT_BYTES, "{short}");
        assert!(short.starts_with("invalid type: string"), "{short}");
        assert!(short.ends_with("expected x at line 1 column 9"), "{short}");
        assert_eq!(shorten("bad\u{1b}[31m"), "bad\\u{1b}[31m");
    }
}
