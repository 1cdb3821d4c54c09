//! A small RFC 4180 CSV writer and reader (fields with commas, quotes or line breaks are quoted).

use std::collections::HashMap;

/// One CSV line (with its line break) from fields.
pub fn line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = fields
        .iter()
        .map(|f| quote(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    out
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Parses CSV text into records; the error names the 1-based line of an unterminated quote or of
/// a stray quote inside an unquoted field.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, (usize, String)> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quoted = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => return Err((line, "quote inside an unquoted field".into())),
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                quoted = false;
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                } else {
                    record.clear();
                }
                line += 1;
                start_line = line;
            }
            _ if quoted => return Err((line, "text after a closing quote".into())),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err((start_line, "unterminated quoted field".into()));
    }
    if !field.is_empty() || quoted || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Records of a CSV text with a header, as maps from column name to value.
#[derive(Debug)]
pub struct Table {
    /// Column names, from the first record.
    pub header: Vec<String>,
    /// The records after the header, each with one field per column.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Splits off the header; every row must have as many fields as the header.
    pub fn from_text(text: &str) -> Result<Self, (usize, String)> {
        let mut records = parse(text)?.into_iter();
        let header = records.next().ok_or((1, "no header".to_string()))?;
        let rows: Vec<Vec<String>> = records.collect();
        for (i, r) in rows.iter().enumerate() {
            if r.len() != header.len() {
                return Err((
                    i + 2,
                    format!("{} fields, the header has {}", r.len(), header.len()),
                ));
            }
        }
        Ok(Self { header, rows })
    }

    /// Each row as a map (column → value).
    pub fn maps(&self) -> Vec<HashMap<&str, &str>> {
        self.rows
            .iter()
            .map(|r| {
                self.header
                    .iter()
                    .map(String::as_str)
                    .zip(r.iter().map(String::as_str))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_awkward_fields() {
        let rows = vec![
            vec![
                "a".to_string(),
                "b,c".into(),
                "say \"hi\"".into(),
                "".into(),
            ],
            vec!["line\nbreak".into(), "plain".into(), "x".into(), "y".into()],
        ];
        let text: String = rows.iter().map(|r| line(r)).collect();
        assert_eq!(parse(&text).expect("parses"), rows);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("a,b\n\"open\n").map_err(|e| e.0), Err(2));
        assert_eq!(parse("a,b\nx\"y,z\n").map_err(|e| e.0), Err(2));
        assert!(Table::from_text("a,b\n1\n").is_err());
        let t = Table::from_text("a,b\r\n1,2\r\n").expect("table");
        assert_eq!(t.maps()[0].get("b"), Some(&"2"));
    }
}
