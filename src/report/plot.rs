//! Line charts as PNG files: plotters draws into an RGB buffer (text with
//! ab_glyph and the font shipped in `assets/fonts`, so no system font
//! library is needed) and the `png` crate encodes it.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::ReportError;
use super::table::number;

/// DejaVu Sans cut down to ASCII and a few symbols (assets/fonts/LICENSE).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Colours that stay apart for up to ten lines (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One run (or group of runs) in a panel: a line, and dots drawn in the
/// same colour without a line (evaluations between training steps).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    pub line: Vec<(f64, f64)>,
    pub dots: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (swept values spanning decades, like beta).
    pub log_x: bool,
}

/// Draws `panels` side by side into a `width` x `height` PNG at `path`.
pub fn draw_png(
    path: &Path,
    panels: &[Panel],
    (width, height): (u32, u32),
) -> Result<(), ReportError> {
    register_font_once();
    let plot_error = |message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel).map_err(plot_error)?;
        }
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    encode_png(path, &pixels, (width, height))
}

fn register_font_once() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the font shipped in assets/fonts is a valid TrueType file");
        }
    });
}

fn encode_png(path: &Path, pixels: &[u8], (width, height): (u32, u32)) -> Result<(), ReportError> {
    let io = |error: std::io::Error| ReportError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let encoded = encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(pixels));
    encoded.map_err(|e| ReportError::Plot {
        path: path.to_path_buf(),
        message: format!("encoding PNG: {e}"),
    })
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let (x, y) = bounds(panel);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64);
    let corner = legend_corner(panel, x, y);
    if panel.log_x {
        let chart = builder
            .build_cartesian_2d((x.0..x.1).log_scale(), y.0..y.1)
            .map_err(|e| e.to_string())?;
        draw_series(chart, panel, corner)
    } else {
        let chart = builder
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(|e| e.to_string())?;
        draw_series(chart, panel, corner)
    }
}

fn draw_series<'a, DB, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    panel: &Panel,
    legend: SeriesLabelPosition,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let label = |v: &f64| tick(*v);
    chart
        .configure_mesh()
        .x_labels(if panel.log_x { 4 } else { 10 })
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, series) in panel.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let line = chart
            .draw_series(LineSeries::new(series.line.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if !series.label.is_empty() {
            line.label(series.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(
                series
                    .dots
                    .iter()
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    if panel.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(legend)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// An axis label: four significant digits at most, no trailing zeros.
fn tick(value: f64) -> String {
    let text = number(value);
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// The corner of the plot where the legend hides the least data: the one
/// with the fewest points of the lines (sampled along each segment) and
/// dots, upper right on a tie.
fn legend_corner(panel: &Panel, x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let scale = |v: f64, (low, high): (f64, f64), log: bool| match log {
        true => (v.ln() - low.ln()) / (high.ln() - low.ln()),
        false => (v - low) / (high - low),
    };
    let mut points: Vec<(f64, f64)> = Vec::new();
    for series in &panel.series {
        let unit: Vec<(f64, f64)> = series
            .line
            .iter()
            .map(|&(px, py)| (scale(px, x, panel.log_x), scale(py, y, false)))
            .collect();
        for pair in unit.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            points.extend((0..16).map(|i| {
                let t = f64::from(i) / 16.0;
                (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
            }));
        }
        points.extend(unit.last());
        points.extend(
            series
                .dots
                .iter()
                .map(|&(px, py)| (scale(px, x, panel.log_x), scale(py, y, false))),
        );
    }
    let (width, height) = (0.4, (0.1 + 0.06 * panel.series.len() as f64).min(0.6));
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let hidden = |right: bool, upper: bool| {
        points
            .iter()
            .filter(|(px, py)| {
                let in_x = if right {
                    *px >= 1.0 - width
                } else {
                    *px <= width
                };
                let in_y = if upper {
                    *py >= 1.0 - height
                } else {
                    *py <= height
                };
                in_x && in_y
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|(_, right, upper)| hidden(*right, *upper))
        .map(|(corner, _, _)| corner)
        .expect("four corners")
}

/// The data's extent with a margin; a flat range is widened so the axis
/// still has ticks.
fn bounds(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let points = panel
        .series
        .iter()
        .flat_map(|s| s.line.iter().chain(&s.dots))
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!panel.log_x || *x > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 2.0, 0.0, 1.0);
    }
    let x = match panel.log_x {
        true => (x0 / 1.25, x1 * 1.25),
        false => pad(x0, x1, 0.02),
    };
    (x, pad(y0, y1, 0.08))
}

fn pad(low: f64, high: f64, fraction: f64) -> (f64, f64) {
    let span = high - low;
    if span <= f64::EPSILON * high.abs().max(1.0) {
        let half = (high.abs() * 0.1).max(1e-3);
        return (low - half, high + half);
    }
    (low - span * fraction, high + span * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(0.8), "0.8");
        assert_eq!(tick(0.104), "0.104");
        assert_eq!(tick(1500.0), "1500");
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let rising = Panel {
            series: vec![Series {
                line: vec![(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)],
                ..Series::default()
            }],
            ..Panel::default()
        };
        let (x, y) = bounds(&rising);
        assert!(matches!(
            legend_corner(&rising, x, y),
            SeriesLabelPosition::UpperLeft
        ));
        let falling = Panel {
            series: vec![Series {
                line: vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.0)],
                ..Series::default()
            }],
            ..Panel::default()
        };
        let (x, y) = bounds(&falling);
        assert!(matches!(
            legend_corner(&falling, x, y),
            SeriesLabelPosition::UpperRight
        ));
    }

    #[test]
    fn draws_a_decodable_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.png");
        let panel = Panel {
            title: "loss".into(),
            x_desc: "step".into(),
            y_desc: "loss".into(),
            series: vec![Series {
                label: "beta=0.1".into(),
                line: vec![(1.0, 0.69), (2.0, 0.6), (3.0, 0.5)],
                dots: vec![(3.0, 0.55)],
            }],
            log_x: false,
        };
        draw_png(
            &path,
            &[
                panel.clone(),
                Panel {
                    log_x: true,
                    ..panel
                },
            ],
            (640, 300),
        )
        .expect("draws");
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(&path).expect("open"),
        ));
        let reader = decoder.read_info().expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (640, 300));
    }
}
