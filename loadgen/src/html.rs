//! A self-contained HTML report (inline SVG, no scripts, no network):
//! the latency percentile spectrum, throughput over time and p99 over time,
//! one series per system, and the summary table.

use crate::report::Report;
use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 60.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// One plotted series: (x, y) points.
struct Series<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart; `log_y` plots y on a log10 scale. `x_labels` and the y
/// ticks are computed from the data.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    log_y: bool,
    x_ticks: &[(f64, String)],
) -> String {
    let transform = |y: f64| if log_y { y.max(1.0).log10() } else { y };
    let points = series.iter().flat_map(|series| series.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1e-9f64, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(transform(y));
        y_max = y_max.max(transform(y));
    }
    if y_min > y_max {
        (y_min, y_max) = (0.0, 1.0);
    }
    if !log_y {
        y_min = 0.0;
    }
    if (y_max - y_min).abs() < 1e-9 {
        y_max = y_min + 1.0;
    }
    let plot_width = WIDTH - 2.0 * MARGIN;
    let plot_height = HEIGHT - 2.0 * MARGIN;
    let to_x = |x: f64| MARGIN + x / x_max * plot_width;
    let to_y = |y: f64| HEIGHT - MARGIN - (transform(y) - y_min) / (y_max - y_min) * plot_height;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ =
        write!(svg, r#"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#, WIDTH / 2.0, escape(title));
    let (left, bottom, right) = (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN);
    let _ = write!(svg, r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>"#);
    let _ = write!(svg, r#"<line x1="{left}" y1="{MARGIN}" x2="{left}" y2="{bottom}" stroke="black"/>"#);
    for step in 0..=4 {
        let value = y_min + (y_max - y_min) * step as f64 / 4.0;
        let shown = if log_y { 10f64.powf(value) } else { value };
        let y = HEIGHT - MARGIN - plot_height * step as f64 / 4.0;
        let _ = write!(svg, r##"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#ddd"/>"##);
        let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, left - 4.0, y + 4.0, human(shown));
    }
    for (x, label) in x_ticks {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            to_x(*x),
            bottom + 14.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        HEIGHT - 12.0,
        escape(x_label)
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (index, series) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let path: Vec<String> = series.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", to_x(x), to_y(y))).collect();
        let _ =
            write!(svg, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let legend_y = MARGIN + 14.0 * index as f64;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/>"#,
            right - 150.0,
            legend_y - 9.0
        );
        let _ = write!(svg, r#"<text x="{}" y="{legend_y}">{}</text>"#, right - 136.0, escape(series.name));
    }
    svg.push_str("</svg>");
    svg
}

fn human(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The percentile spectrum's x position: the number of nines (50 % → 0.3,
/// 90 % → 1, 99 % → 2, 99.9 % → 3), so the tail gets the room it deserves.
fn nines(quantile: f64) -> f64 {
    -(1.0 - quantile.min(0.999_999)).log10()
}

/// The whole page for `runs` (system name, report), `title` on top and
/// `settings` (one line per setting) under it.
pub fn render(title: &str, settings: &[String], runs: &[(String, Report)]) -> String {
    let spectrum: Vec<Series<'_>> = runs
        .iter()
        .map(|(name, report)| Series {
            name,
            points: report.spectrum.iter().map(|(quantile, value)| (nines(*quantile), *value as f64)).collect(),
        })
        .collect();
    let spectrum_ticks: Vec<(f64, String)> = [0.5, 0.9, 0.99, 0.999, 0.9999]
        .iter()
        .map(|quantile| (nines(*quantile), format!("{}%", quantile * 100.0)))
        .collect();
    let over_time = |pick: fn(&crate::report::Second) -> f64| -> Vec<Series<'_>> {
        runs.iter()
            .map(|(name, report)| Series {
                name,
                points: report
                    .timeline
                    .iter()
                    .enumerate()
                    .map(|(second, slot)| (second as f64 + 1.0, pick(slot)))
                    .collect(),
            })
            .collect()
    };
    let longest = runs.iter().map(|(_, report)| report.timeline.len()).max().unwrap_or(1);
    let time_ticks: Vec<(f64, String)> =
        (0..=4).map(|step| (longest as f64 * step as f64 / 4.0, format!("{} s", longest * step / 4))).collect();
    let mut rows = String::new();
    for (name, report) in runs {
        let latency = &report.latency_us;
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            report.throughput_events_per_s,
            report.throughput_mb_per_s,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max,
            report.errors
        );
    }
    let settings: String = settings.iter().map(|line| format!("<li>{}</li>", escape(line))).collect();
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>{title}</h1>
<ul>{settings}</ul>
<table><tr><th>system</th><th>events/s</th><th>MB/s</th><th>p50 µs</th><th>p90 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>errors</th></tr>{rows}</table>
<h2>Latency by percentile</h2>{}
<h2>Throughput over time</h2>{}
<h2>p99 latency over time</h2>{}
</body></html>
"#,
        chart("Latency percentile spectrum", "percentile", "latency µs (log)", &spectrum, true, &spectrum_ticks),
        chart("Throughput", "time", "events/s", &over_time(|slot| slot.events as f64), false, &time_ticks),
        chart(
            "p99 latency per second",
            "time",
            "µs (log)",
            &over_time(|slot| slot.latency_us_p99 as f64),
            true,
            &time_ticks
        ),
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Percentiles, Second};

    #[test]
    fn the_page_is_self_contained_and_plots_every_system() {
        let report = Report {
            events: 10,
            throughput_events_per_s: 5.0,
            latency_us: Percentiles { p50: 100, p90: 200, p99: 300, p999: 400, max: 500 },
            spectrum: vec![(0.5, 100), (0.9, 200), (0.99, 300), (1.0, 500)],
            timeline: vec![Second { requests: 5, events: 5, latency_us_p99: 300 }; 2],
            ..Report::default()
        };
        let page = render(
            "ingest <compare>",
            &["message 256 B".into()],
            &[("ate".into(), report.clone()), ("redis".into(), report)],
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"));
        assert_eq!(page.matches("http").count(), page.matches("http://www.w3.org/2000/svg").count(), "no links out");
        assert!(!page.contains("src="), "nothing loaded from elsewhere");
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("<polyline").count(), 6, "three charts, two systems each");
        assert!(page.contains("ingest &lt;compare&gt;"), "titles are escaped");
    }
}
