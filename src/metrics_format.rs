//! The two text formats `/metrics` speaks, chosen by the scraper's `Accept` as Prometheus'
//! own exporters choose: OpenMetrics 1.0 when asked for, the 0.0.4 text format otherwise
//! (older scrapers, `curl`, anything that sends no `Accept`).

use std::str::FromStr;

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus 0.0.4 text format.
pub const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A format of the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Text,
}

impl Format {
    /// The content type it is sent with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Text => TEXT_0_0_4,
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a weight at least that of plain text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let Ok(mime) = mime::Mime::from_str(range.trim()) else {
                continue;
            };
            let q = mime
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .unwrap_or(1.0);
            match (mime.type_().as_str(), mime.subtype().as_str()) {
                ("application", "openmetrics-text") => openmetrics = openmetrics.max(q),
                ("text", "plain") | ("text", "*") | ("*", "*") => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// OpenMetrics text rewritten in the 0.0.4 format: a counter's `# HELP` and `# TYPE` name
/// its samples (`..._total`), `# UNIT` and `# EOF` go, `unknown` is `untyped`.
pub fn to_text_0_0_4(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name);
            }
        }
    }
    let sample_name = |name: &str| -> String {
        match counters.contains(name) {
            true => format!("{name}_total"),
            false => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", sample_name(name)));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // 0.0.4 escapes only `\` and newlines in help text.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {} {help}\n", sample_name(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asking_for_openmetrics_gets_it_and_everyone_else_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("text/plain, application/openmetrics-text;q=0.5")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(Format::negotiate(Some("garbage;;,")), Format::Text);
    }

    #[test]
    fn counters_are_named_by_their_samples_in_text_0_0_4() {
        let om = "# HELP a_reactions Reactions \\\"accepted\\\".\n# TYPE a_reactions counter\n# UNIT a_reactions reactions\na_reactions_total 3\n# HELP b Open.\n# TYPE b gauge\nb 1\n# TYPE c unknown\nc 2\n# EOF\n";
        assert_eq!(
            to_text_0_0_4(om),
            "# HELP a_reactions_total Reactions \"accepted\".\n# TYPE a_reactions_total counter\na_reactions_total 3\n# HELP b Open.\n# TYPE b gauge\nb 1\n# TYPE c untyped\nc 2\n"
        );
    }
}
