//! PNG plots with `plotters`: pure Rust, no system libraries. Text needs a TrueType font, read
//! from the usual system places (or `$SIAMESE_FONT`); without one the plots are drawn unlabelled
//! rather than not at all.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// Errors from drawing, as text (plotters' error types are generic over the backend).
pub type PlotError = String;

const FONT_PLACES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font as "sans-serif" once; whether text can be drawn.
pub fn fonts_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var("SIAMESE_FONT").ok();
        let places = env
            .iter()
            .map(String::as_str)
            .chain(FONT_PLACES.iter().copied());
        for place in places {
            if let Ok(bytes) = std::fs::read(place) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (set SIAMESE_FONT): plots are drawn without text");
        false
    })
}

fn err(e: impl std::fmt::Display) -> PlotError {
    e.to_string()
}

/// One line of a panel.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (reference lines such as "ideal").
    pub dashed: bool,
}

impl Series {
    /// A solid line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            dashed: false,
        }
    }

    /// A dashed reference line.
    pub fn reference(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            dashed: true,
            ..Series::line(name, points)
        }
    }
}

/// A line chart: named series of (x, y) points, with axis labels, in one panel.
pub struct Panel<'a> {
    /// Title above the panel.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// The lines.
    pub series: Vec<Series>,
    /// Start the y axis at zero (ratios), instead of fitting the data (losses).
    pub y_from_zero: bool,
}

/// Draws panels side by side into one PNG.
pub fn draw_panels(panels: &[Panel<'_>], path: &Path) -> Result<(), PlotError> {
    let text = fonts_ready();
    let width = 640 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(areas) {
        let points = panel.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        let (y0, y1) = match panel.y_from_zero {
            true => (0.0, (y1 * 1.1).max(y0 + pad)),
            false => (y0 - pad, y1 + pad),
        };
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let mut builder = ChartBuilder::on(&area);
        builder.margin(16);
        if text {
            builder
                .caption(panel.title, ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(56);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
        if text {
            chart
                .configure_mesh()
                .x_desc(panel.x_label)
                .y_desc(panel.y_label)
                .draw()
                .map_err(err)?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .draw()
                .map_err(err)?;
        }
        for (i, line) in panel.series.iter().enumerate() {
            let (name, pts) = (&line.name, &line.points);
            let color = Palette99::pick(i).to_rgba();
            let style = ShapeStyle::from(&color).stroke_width(2);
            let series = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, style))
                    .map_err(err)?
            } else {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), style).point_size(4))
                    .map_err(err)?
            };
            if text {
                series.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// Loss and accuracy per epoch for training and validation, two panels side by side (the
/// paper's Figures 5, 7 and 8).
pub fn plot_training_curves(
    title: &str,
    epochs: &[siamese_common::results::EpochRecord],
    path: &Path,
) -> Result<(), PlotError> {
    let series = |name: &str, f: fn(&siamese_common::results::EpochRecord) -> f64| {
        let points = epochs.iter().map(|e| (e.epoch as f64, f(e))).collect();
        Series::line(name, points)
    };
    let loss_title = format!("{title}: loss");
    let acc_title = format!("{title}: pair accuracy");
    draw_panels(
        &[
            Panel {
                title: &loss_title,
                x_label: "epoch",
                y_label: "loss",
                series: vec![
                    series("train", |e| e.train_loss),
                    series("validation", |e| e.val_loss),
                ],
                y_from_zero: true,
            },
            Panel {
                title: &acc_title,
                x_label: "epoch",
                y_label: "accuracy",
                series: vec![
                    series("train", |e| e.train_accuracy),
                    series("validation", |e| e.val_accuracy),
                ],
                y_from_zero: false,
            },
        ],
        path,
    )
}
