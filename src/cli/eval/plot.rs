//! The frontier plot of `spire eval`: FID against tokens per target forward, one curve per rule
//! setting, with bootstrap intervals and the AR and test-split references as horizontal lines.
//! Text uses a bundled font (`assets/fonts`), so no system font library is needed.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");

/// One point: tokens per target forward, FID and its interval.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Tokens per target forward.
    pub x: f64,
    /// FID.
    pub fid: f64,
    /// Interval ends.
    pub lo: f64,
    /// Interval ends.
    pub hi: f64,
}

/// What the plot shows.
pub struct Frontier {
    /// First line of the title.
    pub title: String,
    /// Second line (images, model, settings).
    pub subtitle: String,
    /// Named curves, drawn in order.
    pub curves: Vec<(String, Vec<Point>)>,
    /// Named horizontal reference lines (FID).
    pub references: Vec<(String, f64)>,
}

/// Draw `frontier` as a PNG at `path`.
pub fn write_png(path: &Path, frontier: &Frontier) -> anyhow::Result<()> {
    register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| anyhow::anyhow!("the bundled plot font is unreadable"))?;
    draw(path, frontier).with_context(|| format!("drawing the plot {}", path.display()))
}

fn draw(path: &Path, frontier: &Frontier) -> anyhow::Result<()> {
    let points = || frontier.curves.iter().flat_map(|(_, p)| p.iter());
    let x_max = points().map(|p| p.x).fold(1.0, f64::max) * 1.05 + 0.1;
    let y_max = points().map(|p| p.hi).chain(frontier.references.iter().map(|r| r.1)).fold(0.0, f64::max) * 1.15 + 1e-6;
    let root = BitMapBackend::new(path, (1000, 680)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&frontier.title, ("sans-serif", 22))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&frontier.subtitle, ("sans-serif", 14))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.9..x_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("image tokens per target forward").y_desc("FID (eval net features), 95% CI").label_style(("sans-serif", 13)).draw()?;
    for (i, (name, value)) in frontier.references.iter().enumerate() {
        let style = if i == 0 { BLACK.stroke_width(2) } else { RGBColor(120, 120, 120).stroke_width(1) };
        chart
            .draw_series(LineSeries::new([(0.9, *value), (x_max, *value)], style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    for (i, (name, curve)) in frontier.curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut sorted = curve.clone();
        sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
        chart
            .draw_series(LineSeries::new(sorted.iter().map(|p| (p.x, p.fid)), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(sorted.iter().map(|p| PathElement::new([(p.x, p.lo), (p.x, p.hi)], color)))?;
        chart.draw_series(sorted.iter().map(|p| Circle::new((p.x, p.fid), 4, color.filled())))?;
    }
    chart.configure_series_labels().label_font(("sans-serif", 13)).background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    root.present()?;
    Ok(())
}
