//! Inline SVG charts: scalable, printable, readable without JavaScript, and free of inline `style` (only
//! presentation attributes), so a strict Content-Security-Policy holds.

use crate::{dollars, escape};
use std::fmt::Write;

/// One day of spend, split by series (a model, a provider).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaySpend {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub parts: Vec<(String, u64)>,
}

/// Colour-blind-safe palette (Okabe-Ito), cycled by series.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

const WIDTH: u32 = 720;
const HEIGHT: u32 = 220;
const LEFT: u32 = 64;
const BOTTOM: u32 = 28;
const TOP: u32 = 10;

/// A stacked bar per day; each bar and segment has a `<title>` (the hover text and what a screen reader
/// reads), and a legend names the series. Empty input renders a short note instead.
pub fn daily_spend_chart(days: &[DaySpend]) -> String {
    let mut series: Vec<&str> = Vec::new();
    for day in days {
        for (label, _) in &day.parts {
            if !series.contains(&label.as_str()) {
                series.push(label);
            }
        }
    }
    let totals: Vec<u64> = days
        .iter()
        .map(|d| d.parts.iter().map(|(_, c)| *c).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0);
    if days.is_empty() || max == 0 {
        return "<p class=\"empty\">No spend in this range.</p>".to_owned();
    }
    let plot_w = WIDTH - LEFT - 8;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = f64::from(plot_w) / days.len() as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" aria-label=\"Daily spend\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"100%\" preserveAspectRatio=\"xMinYMin meet\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    // Axis: zero and the maximum, labelled in dollars.
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx}\" y=\"{y0}\" font-size=\"11\" text-anchor=\"end\">$0</text>",
        y0 = TOP + plot_h,
        x1 = WIDTH - 8,
        lx = LEFT - 6,
        ty = TOP + 10,
        top = escape(&dollars(max)),
    );
    for (i, (day, total)) in days.iter().zip(&totals).enumerate() {
        let x = f64::from(LEFT) + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = f64::from(TOP + plot_h);
        let _ = write!(
            svg,
            "<g class=\"day\"><title>{} {}</title>",
            escape(&day.day),
            escape(&dollars(*total))
        );
        for (label, cost) in &day.parts {
            let h = f64::from(plot_h) * (*cost as f64) / (max as f64);
            y -= h;
            let colour =
                PALETTE[series.iter().position(|s| s == label).unwrap_or(0) % PALETTE.len()];
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{} {}: {}</title></rect>",
                escape(&day.day),
                escape(label),
                escape(&dollars(*cost))
            );
        }
        svg.push_str("</g>");
        // Label every day when they fit, else about eight of them.
        let every = days.len().div_ceil(8).max(1);
        if i % every == 0 {
            let short = day.day.get(5..).unwrap_or(&day.day);
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                HEIGHT - 10,
                escape(short)
            );
        }
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (i, label) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect width=\"10\" height=\"10\" fill=\"{}\"/></svg> {}</li>",
            PALETTE[i % PALETTE.len()],
            escape(label)
        );
    }
    svg.push_str("</ul>");
    svg
}

/// Month spend against the budget: a bar filled to the share spent (red past 90 %), with the figures as
/// text; no budget = the spend alone.
pub fn budget_bar(spent_micro_usd: u64, budget_micro_usd: Option<u64>) -> String {
    let Some(budget) = budget_micro_usd.filter(|b| *b > 0) else {
        return format!(
            "<span class=\"budget none\">{} (no budget)</span>",
            escape(&dollars(spent_micro_usd))
        );
    };
    let share = (spent_micro_usd as f64 / budget as f64).min(1.0);
    let percent = (spent_micro_usd as f64 / budget as f64 * 100.0).round();
    let colour = if share >= 0.9 { "#D55E00" } else { "#009E73" };
    format!(
        "<span class=\"budget\"><svg width=\"120\" height=\"10\" role=\"img\" aria-label=\"{percent}% of budget\">\
         <rect width=\"120\" height=\"10\" fill=\"#ddd\"/><rect width=\"{:.1}\" height=\"10\" fill=\"{colour}\"/></svg> \
         {} of {} ({percent}%)</span>",
        120.0 * share,
        escape(&dollars(spent_micro_usd)),
        escape(&dollars(budget)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: &str, parts: &[(&str, u64)]) -> DaySpend {
        DaySpend {
            day: d.to_owned(),
            parts: parts.iter().map(|(l, c)| ((*l).to_owned(), *c)).collect(),
        }
    }

    #[test]
    fn one_segment_per_series_per_day_and_a_legend() {
        let svg = daily_spend_chart(&[
            day(
                "2026-11-01",
                &[("gpt-4o-mini", 2_000_000), ("claude", 1_000_000)],
            ),
            day("2026-11-02", &[("gpt-4o-mini", 500_000)]),
        ]);
        assert_eq!(svg.matches("<rect ").count(), 3 + 2, "{svg}");
        assert!(svg.contains("2026-11-01 gpt-4o-mini: $2.00"), "{svg}");
        assert!(svg.contains("<li>") && svg.contains("claude"));
    }

    #[test]
    fn labels_are_escaped_and_empty_ranges_say_so() {
        let svg = daily_spend_chart(&[day("2026-11-01", &[("<b>m</b>", 10)])]);
        assert!(!svg.contains("<b>") && svg.contains("&lt;b&gt;m"), "{svg}");
        assert!(daily_spend_chart(&[]).contains("No spend"));
    }

    #[test]
    fn budget_bars_show_share_and_figures() {
        let bar = budget_bar(4_500_000, Some(5_000_000));
        assert!(bar.contains("90%") && bar.contains("#D55E00"), "{bar}");
        assert!(budget_bar(1, None).contains("no budget"));
    }
}
