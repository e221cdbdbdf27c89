//! A small SVG chart renderer: line/scatter series on linear or log axes, stacked bars,
//! markers with labels, a title, labelled axes with units and a legend placed where it
//! covers no data ([`super::legend`]). Every chart carries a `<title>` element so that
//! viewers and tests can identify it; points, lines, bars and the legend carry classes
//! (`point`, `series`, `bar`, `legend`) so that tests can check the layout.

use super::axis::{tick_text, Axis};
use super::legend::{self, Obstacles, Rect};
use std::fmt::Write;

/// One line (or set of bars) on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Draw markers only (no connecting line).
    pub scatter: bool,
    /// Colour index (default: the series' position) and SVG dash pattern.
    pub color: Option<usize>,
    pub dash: Option<&'static str>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            scatter: false,
            color: None,
            dash: None,
        }
    }

    fn color(&self, i: usize) -> &'static str {
        COLORS[self.color.unwrap_or(i) % COLORS.len()]
    }
}

/// A labelled point drawn on top (e.g. the knee).
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub y: f64,
    pub label: String,
}

/// How series are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Lines,
    /// Series stacked as bars at each category index (x is the category index).
    StackedBars,
}

/// A chart, rendered with [`Chart::render`] at any size.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub kind: Kind,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// Category names for bars (x tick labels).
    pub categories: Vec<String>,
}

const COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Data-to-pixel mapping of one chart: its axes and plot area.
struct Frame {
    x: Axis,
    y: Axis,
    plot: Rect,
}

impl Frame {
    fn px(&self, v: f64) -> f64 {
        self.plot.x + self.x.frac(v).clamp(-0.02, 1.02) * self.plot.w
    }

    fn py(&self, v: f64) -> f64 {
        self.plot.y + self.plot.h - self.y.frac(v).clamp(-0.02, 1.02) * self.plot.h
    }

    fn point(&self, p: (f64, f64)) -> (f64, f64) {
        (self.px(p.0), self.py(p.1))
    }
}

/// At most this many legend entries.
const MAX_LEGEND: usize = 12;

impl Chart {
    /// A standalone SVG document of `w` x `h` pixels.
    pub fn render(&self, w: f64, h: f64) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n{}</svg>\n",
            self.body(w, h)
        )
    }

    /// True when the chart shows a relation: bars, or a line through two distinct x.
    pub fn has_something_to_show(&self) -> bool {
        match self.kind {
            Kind::StackedBars => !self.categories.is_empty(),
            Kind::Lines => self.series.iter().any(|s| {
                s.points
                    .iter()
                    .any(|p| s.points.first().is_some_and(|f| f.0 != p.0))
            }),
        }
    }

    fn axes_ranges(&self) -> (Axis, Axis) {
        if self.kind == Kind::StackedBars {
            let x = Axis {
                lo: -0.5,
                hi: self.categories.len().max(1) as f64 - 0.5,
                log: false,
            };
            return (
                x,
                Axis::new(self.stack_tops().into_iter(), self.y_log, true),
            );
        }
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let x = Axis::new(
            xs.chain(self.markers.iter().map(|m| m.x)),
            self.x_log,
            false,
        );
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        (x, Axis::new(ys, self.y_log, true))
    }

    /// The chart's elements (for embedding in a dashboard inside a nested `<svg>`).
    pub fn body(&self, w: f64, h: f64) -> String {
        let (l, r, t, b) = (70.0, 20.0, 40.0, 55.0);
        let (x, y) = self.axes_ranges();
        let mut f = Frame {
            x,
            y,
            plot: Rect {
                x: l,
                y: t,
                w: w - l - r,
                h: h - t - b,
            },
        };
        let names: Vec<&str> = self
            .series
            .iter()
            .take(MAX_LEGEND)
            .map(|s| s.name.as_str())
            .collect();
        let spot = (!names.is_empty()).then(|| {
            let size = legend::size(&names);
            legend::inside(f.plot, size, &self.obstacles(&f)).unwrap_or_else(|| {
                // No free corner: a column right of a narrower plot.
                f.plot.w = (f.plot.w - size.0 - 12.0).max(0.45 * f.plot.w);
                Rect {
                    x: f.plot.x + f.plot.w + 12.0,
                    y: t,
                    w: size.0,
                    h: size.1,
                }
            })
        });
        let mut s = String::new();
        let _ = writeln!(s, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>"
        );
        title(&mut s, &self.title, w);
        self.axes(&mut s, &f);
        if self.kind == Kind::StackedBars {
            self.draw_bars(&mut s, &f);
        } else {
            self.draw_lines(&mut s, &f);
        }
        for m in &self.markers {
            let (cx, cy) = f.point((m.x, m.y));
            let _ = writeln!(s, "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"7\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2.5\"/>");
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#d62728\">{}</text>",
                cx + 9.0,
                cy - 9.0,
                esc(&m.label)
            );
        }
        if let Some(spot) = spot {
            self.legend(&mut s, spot);
        }
        s
    }

    /// Everything drawn in the plot area, in pixels: what a legend must not cover.
    fn obstacles(&self, f: &Frame) -> Obstacles {
        let mut o = Obstacles::default();
        if self.kind == Kind::StackedBars {
            o.boxes = self.bars(f).into_iter().map(|(r, _)| r).collect();
        } else {
            o.lines = self
                .series
                .iter()
                .map(|s| s.points.iter().map(|&p| f.point(p)).collect())
                .collect();
        }
        for m in &self.markers {
            let (cx, cy) = f.point((m.x, m.y));
            o.boxes.push(Rect {
                x: cx - 8.0,
                y: cy - 8.0,
                w: 16.0,
                h: 16.0,
            });
            let label_w = 7.0 * m.label.chars().count() as f64;
            o.boxes.push(Rect {
                x: cx + 9.0,
                y: cy - 22.0,
                w: label_w,
                h: 16.0,
            });
        }
        o
    }

    fn stack_tops(&self) -> Vec<f64> {
        let n = self.categories.len();
        (0..n)
            .map(|i| {
                self.series
                    .iter()
                    .filter_map(|s| s.points.get(i).map(|p| p.1))
                    .sum()
            })
            .collect()
    }

    fn axes(&self, s: &mut String, f: &Frame) {
        let Rect {
            x: l,
            y: t,
            w: pw,
            h: ph,
        } = f.plot;
        let _ = writeln!(s, "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>");
        for v in f.y.ticks() {
            let yy = f.py(v);
            let _ = writeln!(s, "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>", l + pw, l - 5.0, yy + 4.0, tick_text(v));
        }
        if self.kind == Kind::StackedBars {
            for (i, c) in self.categories.iter().enumerate() {
                let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", f.px(i as f64), t + ph + 16.0, esc(c));
            }
        } else {
            for v in f.x.ticks() {
                let xx = f.px(v);
                let _ = writeln!(s, "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{t}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", t + ph, t + ph + 16.0, tick_text(v));
            }
        }
        let _ = writeln!(s, "<text class=\"x-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\">{}</text>", l + pw / 2.0, t + ph + 40.0, esc(&self.x_label));
        let (yx, yy) = (16.0, t + ph / 2.0);
        let _ = writeln!(s, "<text class=\"y-label\" x=\"{yx}\" y=\"{yy:.1}\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 {yx} {yy:.1})\">{}</text>", esc(&self.y_label));
    }

    fn draw_lines(&self, s: &mut String, f: &Frame) {
        for (i, ser) in self.series.iter().enumerate() {
            let color = ser.color(i);
            let dash = ser
                .dash
                .map_or(String::new(), |d| format!(" stroke-dasharray=\"{d}\""));
            let pts: Vec<String> = ser
                .points
                .iter()
                .map(|&p| {
                    let (x, y) = f.point(p);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            if !ser.scatter && pts.len() > 1 {
                let _ = writeln!(
                    s,
                    "<polyline class=\"series\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                    pts.join(" ")
                );
            }
            if ser.points.len() <= 64 {
                for &p in &ser.points {
                    let (x, y) = f.point(p);
                    let _ = writeln!(
                        s,
                        "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>"
                    );
                }
            }
        }
    }

    /// Each bar's box and colour.
    fn bars(&self, f: &Frame) -> Vec<(Rect, &'static str)> {
        let bw = 0.6 * f.plot.w / self.categories.len().max(1) as f64;
        let mut out = Vec::new();
        for i in 0..self.categories.len() {
            let mut base = 0.0;
            for (k, ser) in self.series.iter().enumerate() {
                let v = ser.points.get(i).map_or(0.0, |p| p.1);
                let (y0, y1) = (f.py(base), f.py(base + v));
                let r = Rect {
                    x: f.px(i as f64) - bw / 2.0,
                    y: y1,
                    w: bw,
                    h: (y0 - y1).max(0.0),
                };
                out.push((r, COLORS[k % COLORS.len()]));
                base += v;
            }
        }
        out
    }

    fn draw_bars(&self, s: &mut String, f: &Frame) {
        for (r, color) in self.bars(f) {
            let _ = writeln!(s, "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>", r.x, r.y, r.w, r.h);
        }
    }

    fn legend(&self, s: &mut String, at: Rect) {
        let _ = writeln!(s, "<rect class=\"legend\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"white\" fill-opacity=\"0.8\"/>", at.x, at.y, at.w, at.h);
        let (x, y) = (at.x + 3.0, at.y + 3.0);
        for (i, ser) in self.series.iter().enumerate().take(MAX_LEGEND) {
            let yy = y + 15.0 * i as f64;
            let dash = ser
                .dash
                .map_or(String::new(), |d| format!(" stroke-dasharray=\"{d}\""));
            let _ = writeln!(s, "<line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"3\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>", x + 12.0, yy + 5.0, yy + 5.0, ser.color(i), x + 16.0, yy + 9.0, esc(&ser.name));
        }
    }
}

/// The title, centred; a long one is set smaller (down to 11 px), then split before its
/// ` [group]` part, so that it never runs past the chart's edges.
pub fn title(s: &mut String, text: &str, w: f64) {
    let fits = |size: f64, t: &str| 0.6 * size * t.chars().count() as f64 <= w - 16.0;
    let size = [15.0, 14.0, 13.0, 12.0, 11.0]
        .into_iter()
        .find(|&z| fits(z, text))
        .unwrap_or(11.0);
    let lines: Vec<&str> = match text.split_once(" [") {
        Some((a, _)) if !fits(size, text) => vec![a, &text[a.len() + 1..]],
        _ => vec![text],
    };
    for (i, line) in lines.iter().enumerate() {
        let first = if lines.len() == 1 { 22.0 } else { 14.0 };
        let y = first + i as f64 * (size + 3.0);
        let squeeze = if fits(size, line) {
            String::new()
        } else {
            format!(
                " textLength=\"{:.0}\" lengthAdjust=\"spacingAndGlyphs\"",
                w - 16.0
            )
        };
        let _ = writeln!(s, "<text class=\"title\" x=\"{}\" y=\"{y:.1}\" text-anchor=\"middle\" font-size=\"{size}\" font-weight=\"bold\"{squeeze}>{}</text>", w / 2.0, esc(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_title_axis_labels_and_lines() {
        let c = Chart {
            title: "T <1>".into(),
            x_label: "batch size".into(),
            y_label: "latency (ms)".into(),
            x_log: true,
            y_log: true,
            kind: Kind::Lines,
            series: vec![Series::new("p50", vec![(1.0, 5.0), (8.0, 50.0)])],
            markers: vec![Marker {
                x: 8.0,
                y: 50.0,
                label: "knee".into(),
            }],
            categories: vec![],
        };
        let svg = c.render(600.0, 400.0);
        assert!(svg.contains("<title>T &lt;1&gt;</title>"));
        assert!(svg.contains("batch size") && svg.contains("latency (ms)"));
        assert!(svg.contains("<polyline") && svg.contains("knee"));
        assert!(!svg.contains("NaN"));
    }
}
