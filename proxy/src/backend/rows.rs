//! The answer of a side job's query: rows with their column names, read by
//! name and parsed into the type the job wants, with an error naming the
//! column when a value is missing or not of that type. Jobs never pick a
//! value by its position in the row.

use std::str::FromStr;

/// A query's rows as text (`None` for NULL), with the answer's column names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    columns: Vec<String>,
    data: Vec<Vec<Option<String>>>,
}

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("the answer has no column {0:?}")]
    NoColumn(String),
    #[error("column {0:?} is NULL")]
    Null(String),
    #[error("column {column:?}: {value:?} is not {what}")]
    Invalid {
        column: String,
        value: String,
        what: &'static str,
    },
}

impl Rows {
    pub fn new(columns: Vec<String>, data: Vec<Vec<Option<String>>>) -> Rows {
        Rows { columns, data }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.data.iter().map(|values| Row {
            columns: &self.columns,
            values,
        })
    }

    /// The rows with `column`'s value replaced by `f` of it; a row for
    /// which `f` gives `None` (or whose value is NULL) is left out.
    pub fn map_column(mut self, column: &str, f: impl Fn(&str) -> Option<String>) -> Rows {
        let Some(at) = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
        else {
            return self;
        };
        self.data.retain_mut(|row| {
            let mapped = row.get(at).and_then(|v| v.as_deref()).and_then(&f);
            match (mapped, row.get_mut(at)) {
                (Some(m), Some(slot)) => {
                    *slot = Some(m);
                    true
                }
                _ => false,
            }
        });
        self
    }

    /// The rows as they came, for copying whole rows whose columns the
    /// caller listed itself (backfill, verify).
    pub fn into_data(self) -> Vec<Vec<Option<String>>> {
        self.data
    }
}

/// One row, read by column name (case-insensitive, as SQL names are).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Option<String>],
}

impl<'a> Row<'a> {
    /// The text of `column`, `None` for NULL.
    pub fn text(&self, column: &str) -> Result<Option<&'a str>, RowError> {
        let at = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
            .ok_or_else(|| RowError::NoColumn(column.to_string()))?;
        Ok(self.values.get(at).and_then(|v| v.as_deref()))
    }

    /// The text of `column`, which must not be NULL.
    pub fn str(&self, column: &str) -> Result<&'a str, RowError> {
        self.text(column)?
            .ok_or_else(|| RowError::Null(column.to_string()))
    }

    /// `column` parsed as a `T` (`None` for NULL).
    pub fn parse<T: FromStr>(&self, column: &str) -> Result<Option<T>, RowError> {
        let Some(text) = self.text(column)? else {
            return Ok(None);
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| RowError::Invalid {
                column: column.to_string(),
                value: text.to_string(),
                what: std::any::type_name::<T>(),
            })
    }

    /// `column` parsed as a `T`, which must not be NULL.
    pub fn get<T: FromStr>(&self, column: &str) -> Result<T, RowError> {
        self.parse(column)?
            .ok_or_else(|| RowError::Null(column.to_string()))
    }
}

/// The column names of a PostgreSQL RowDescription body.
pub fn pg_column_names(body: &[u8]) -> Vec<String> {
    let Some(n) = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Vec::new();
    };
    let mut rest = body.get(2..).unwrap_or_default();
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some(end) = rest.iter().position(|&c| c == 0) else {
            break;
        };
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        // Name, then 18 bytes of table, column, type, size, modifier, format.
        rest = rest.get(end + 19..).unwrap_or_default();
    }
    out
}

/// The column name of a MySQL column definition packet (catalog, schema,
/// table, original table, then the name, each length-encoded).
pub fn my_column_name(def: &[u8]) -> String {
    let mut rest = def;
    for i in 0..5 {
        let Some((len, n)) = crate::wire::my_response::lenenc(rest) else {
            return String::new();
        };
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| n.checked_add(l))
            .map_or(rest.len(), |e| e.min(rest.len()));
        if i == 4 {
            return String::from_utf8_lossy(&rest[n..end]).into_owned();
        }
        rest = &rest[end..];
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Rows {
        Rows::new(
            vec!["TABLE_NAME".into(), "auto_increment".into()],
            vec![
                vec![Some("orders".into()), Some("42".into())],
                vec![Some("notes".into()), None],
                vec![Some("bad".into()), Some("x1".into())],
            ],
        )
    }

    #[test]
    fn values_are_read_by_name_and_parsed() {
        let r = rows();
        let all: Vec<_> = r.iter().collect();
        assert_eq!(all[0].str("table_name"), Ok("orders"));
        assert_eq!(all[0].get::<u64>("AUTO_INCREMENT"), Ok(42));
        assert_eq!(all[1].parse::<u64>("auto_increment"), Ok(None));
        assert_eq!(
            all[1].get::<u64>("auto_increment"),
            Err(RowError::Null("auto_increment".into()))
        );
        assert!(matches!(
            all[2].get::<u64>("auto_increment"),
            Err(RowError::Invalid { .. })
        ));
        assert_eq!(
            all[0].text("missing"),
            Err(RowError::NoColumn("missing".into()))
        );
    }

    #[test]
    fn column_names_come_from_the_wire_and_short_input_does_not_panic() {
        let mut body = vec![0, 2];
        for name in ["relname", "last_value"] {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0; 18]);
        }
        assert_eq!(pg_column_names(&body), ["relname", "last_value"]);
        assert_eq!(pg_column_names(&body[..12]), ["relname"]);
        assert!(pg_column_names(&[]).is_empty());
        let mut def = Vec::new();
        for part in ["def", "app", "t", "t", "id"] {
            def.push(part.len() as u8);
            def.extend_from_slice(part.as_bytes());
        }
        assert_eq!(my_column_name(&def), "id");
        assert_eq!(my_column_name(&def[..5]), "");
    }
}
