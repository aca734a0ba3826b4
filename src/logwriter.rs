//! turnout's log lines: one event, one line. Values in them come from
//! clients (user names, database names, statements) and servers (error
//! texts); a control character in one of them (a newline, an ANSI escape)
//! could forge a line or rewrite a terminal. Every control character inside
//! an event is written escaped (`\n`, `\x1b`); only the event's own final
//! newline stays.

use std::io::Write;

/// Escapes the control characters of `event` (one formatted log event),
/// keeping its final newline.
pub fn escape_event(event: &[u8]) -> Vec<u8> {
    let (body, end) = match event.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

/// Standard error, each event escaped (tracing's formatter writes one event
/// per `write`).
pub struct EscapingStderr;

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&escape_event(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `log.format = "json"`: one JSON object per event (`at`, `level`,
/// `message`, then the event's fields by name), for log shippers.
pub struct JsonEvents;

struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonEvents
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("at".into(), turnout_control::readdiff::now_rfc3339().into());
        line.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        if let Some(m) = fields.0.remove("message") {
            line.insert("message".into(), m);
        }
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_own() {
        let event = b"WARN login failed user=eve\nINFO flip done \x1b[2Jx\n";
        assert_eq!(
            escape_event(event),
            b"WARN login failed user=eve\\nINFO flip done \\x1b[2Jx\n".to_vec()
        );
        assert_eq!(escape_event(b"plain\n"), b"plain\n".to_vec());
    }
}
