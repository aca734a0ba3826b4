//! Row values out of server error texts, for records and logs that must not
//! hold data (`mirror.log_statements = false`): PostgreSQL's DETAIL
//! (`Key (email)=(a@b.c) already exists.`, `Failing row contains (1, x).`)
//! and messages that quote the value they refused (`invalid input syntax
//! for type integer: "abc"`), MySQL's `Duplicate entry 'a@b.c' for key ...`
//! and `Incorrect integer value: 'abc' for column ...`. Column and table
//! names stay: they say where to look.

/// `text` with the values in it replaced by `<redacted: N bytes>`.
pub fn redact_error_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        // The earliest place a value starts, and how it ends.
        let found = [
            ("=(", Close::Paren),
            ("contains (", Close::Paren),
            ("entry '", Close::Quote('\'')),
            ("value: '", Close::Quote('\'')),
            (": \"", Close::Quote('"')),
        ]
        .iter()
        .filter_map(|(start, close)| rest.find(start).map(|at| (at, *start, *close)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, start, close)) = found else {
            out.push_str(rest);
            return out;
        };
        let value_at = at + start.len();
        out.push_str(&rest[..value_at]);
        let value = &rest[value_at..];
        let len = close.value_len(value);
        out.push_str(&format!("<redacted: {len} bytes>"));
        rest = &value[len..];
    }
}

#[derive(Clone, Copy)]
enum Close {
    /// Up to the parenthesis that closes the one opened (values may hold
    /// parentheses of their own).
    Paren,
    /// Up to the quote (a doubled or backslashed quote is part of it).
    Quote(char),
}

impl Close {
    fn value_len(self, value: &str) -> usize {
        match self {
            Close::Paren => {
                let mut depth = 0usize;
                for (i, c) in value.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => return i,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
                value.len()
            }
            Close::Quote(q) => {
                let mut chars = value.char_indices().peekable();
                while let Some((i, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == q {
                        if chars.peek().is_some_and(|&(_, n)| n == q) {
                            chars.next();
                        } else {
                            return i;
                        }
                    }
                }
                value.len()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_names_stay() {
        assert_eq!(
            redact_error_values("duplicate key value violates unique constraint \"u_email\" (23505): Key (email)=(alice@example.com) already exists."),
            "duplicate key value violates unique constraint \"u_email\" (23505): Key (email)=(<redacted: 17 bytes>) already exists."
        );
        assert_eq!(
            redact_error_values("new row for relation \"t\" violates check constraint \"c\" (23514): Failing row contains (7, secret (x), null)."),
            "new row for relation \"t\" violates check constraint \"c\" (23514): Failing row contains (<redacted: 19 bytes>)."
        );
        assert_eq!(
            redact_error_values("invalid input syntax for type integer: \"4111 1111\" (22P02)"),
            "invalid input syntax for type integer: \"<redacted: 9 bytes>\" (22P02)"
        );
        assert_eq!(
            redact_error_values("1062 (23000): Duplicate entry 'bob@example.com' for key 'email'"),
            "1062 (23000): Duplicate entry '<redacted: 15 bytes>' for key 'email'"
        );
        assert_eq!(
            redact_error_values(
                "Incorrect integer value: 'it''s' for column `app`.`t`.`n` at row 1"
            ),
            "Incorrect integer value: '<redacted: 5 bytes>' for column `app`.`t`.`n` at row 1"
        );
        assert_eq!(
            redact_error_values("relation \"gone\" does not exist (42P01)"),
            "relation \"gone\" does not exist (42P01)"
        );
        // Unterminated: the rest is the value.
        assert_eq!(
            redact_error_values("Key (a)=(open"),
            "Key (a)=(<redacted: 4 bytes>"
        );
    }
}
