//! A small SVG chart renderer: line/scatter series on linear or log axes, stacked bars,
//! markers with labels, a title, labelled axes with units and a legend. Every chart
//! carries a `<title>` element so that viewers and tests can identify it.

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

/// Axis range with optional log scale; maps data to [0, 1].
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool, zero: bool) -> Self {
        let vals: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let mut lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let mut hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            (lo, hi) = (
                10f64.powf(lo.log10().floor()),
                10f64.powf(hi.log10().ceil()),
            );
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            if zero {
                lo = lo.min(0.0);
            }
            if hi <= lo {
                hi = lo + lo.abs().max(1.0);
            }
            let step = nice_step((hi - lo) / 5.0);
            (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        }
        Self { lo, hi, log }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo * 1e-3).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let n = ((self.hi - self.lo) / step).round() as usize;
            (0..=n).map(|i| self.lo + step * i as f64).collect()
        }
    }
}

/// The 1, 2 or 5 times a power of ten nearest above `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-12).log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

fn tick_text(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

impl Chart {
    /// A standalone SVG document of `w` x `h` pixels.
    pub fn render(&self, w: f64, h: f64) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n{}</svg>\n",
            self.body(w, h)
        )
    }

    /// The chart's elements (for embedding in a dashboard inside a nested `<svg>`).
    pub fn body(&self, w: f64, h: f64) -> String {
        let (l, r, t, b) = (70.0, 20.0, 40.0, 55.0);
        let (pw, ph) = (w - l - r, h - t - b);
        let bars = self.kind == Kind::StackedBars;
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let x = if bars {
            Axis {
                lo: -0.5,
                hi: self.categories.len().max(1) as f64 - 0.5,
                log: false,
            }
        } else {
            Axis::new(
                xs.chain(self.markers.iter().map(|m| m.x)),
                self.x_log,
                false,
            )
        };
        let ys: Vec<f64> = if bars {
            self.stack_tops()
        } else {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .collect()
        };
        let y = Axis::new(ys.into_iter(), self.y_log, true);
        let px = |v: f64| l + x.frac(v).clamp(-0.02, 1.02) * pw;
        let py = |v: f64| t + ph - y.frac(v).clamp(-0.02, 1.02) * ph;
        let mut s = String::new();
        let _ = writeln!(s, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>"
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>", w / 2.0, esc(&self.title));
        self.axes(&mut s, &x, &y, (l, t, pw, ph), &px, &py);
        if bars {
            self.draw_bars(&mut s, pw, &px, &py);
        } else {
            self.draw_lines(&mut s, &px, &py);
        }
        for m in &self.markers {
            let (cx, cy) = (px(m.x), py(m.y));
            let _ = writeln!(s, "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"7\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2.5\"/>");
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#d62728\">{}</text>",
                cx + 9.0,
                cy - 9.0,
                esc(&m.label)
            );
        }
        self.legend(&mut s, l + 10.0, t + 8.0);
        s
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

    #[allow(clippy::too_many_arguments)]
    fn axes(
        &self,
        s: &mut String,
        x: &Axis,
        y: &Axis,
        (l, t, pw, ph): (f64, f64, f64, f64),
        px: &dyn Fn(f64) -> f64,
        py: &dyn Fn(f64) -> f64,
    ) {
        let _ = writeln!(s, "<rect x=\"{l}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>");
        for v in y.ticks() {
            let yy = py(v);
            let _ = writeln!(s, "<line x1=\"{l}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>", l + pw, l - 5.0, yy + 4.0, tick_text(v));
        }
        if self.kind == Kind::StackedBars {
            for (i, c) in self.categories.iter().enumerate() {
                let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", px(i as f64), t + ph + 16.0, esc(c));
            }
        } else {
            for v in x.ticks() {
                let xx = px(v);
                let _ = writeln!(s, "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{t}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", t + ph, t + ph + 16.0, tick_text(v));
            }
        }
        let _ = writeln!(s, "<text class=\"x-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\">{}</text>", l + pw / 2.0, t + ph + 40.0, esc(&self.x_label));
        let (yx, yy) = (16.0, t + ph / 2.0);
        let _ = writeln!(s, "<text class=\"y-label\" x=\"{yx}\" y=\"{yy:.1}\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 {yx} {yy:.1})\">{}</text>", esc(&self.y_label));
    }

    fn draw_lines(&self, s: &mut String, px: &dyn Fn(f64) -> f64, py: &dyn Fn(f64) -> f64) {
        for (i, ser) in self.series.iter().enumerate() {
            let color = ser.color(i);
            let dash = ser
                .dash
                .map_or(String::new(), |d| format!(" stroke-dasharray=\"{d}\""));
            let pts: Vec<String> = ser
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                .collect();
            if !ser.scatter && pts.len() > 1 {
                let _ = writeln!(
                    s,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                    pts.join(" ")
                );
            }
            if ser.points.len() <= 64 {
                for p in &ser.points {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                        px(p.0),
                        py(p.1)
                    );
                }
            }
        }
    }

    fn draw_bars(&self, s: &mut String, pw: f64, px: &dyn Fn(f64) -> f64, py: &dyn Fn(f64) -> f64) {
        let bw = 0.6 * pw / self.categories.len().max(1) as f64;
        for i in 0..self.categories.len() {
            let mut base = 0.0;
            for (k, ser) in self.series.iter().enumerate() {
                let v = ser.points.get(i).map_or(0.0, |p| p.1);
                let (y0, y1) = (py(base), py(base + v));
                let _ = writeln!(s, "<rect x=\"{:.1}\" y=\"{y1:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"/>", px(i as f64) - bw / 2.0, (y0 - y1).max(0.0), COLORS[k % COLORS.len()]);
                base += v;
            }
        }
    }

    fn legend(&self, s: &mut String, x: f64, y: f64) {
        let n = self.series.len().min(12);
        if n == 0 {
            return;
        }
        let w = 20.0 + 6.5 * self.series.iter().map(|s| s.name.len()).max().unwrap_or(0) as f64;
        let _ = writeln!(s, "<rect x=\"{}\" y=\"{}\" width=\"{w:.0}\" height=\"{}\" fill=\"white\" fill-opacity=\"0.8\"/>", x - 3.0, y - 3.0, 15.0 * n as f64 + 4.0);
        for (i, ser) in self.series.iter().enumerate().take(n) {
            let yy = y + 15.0 * i as f64;
            let dash = ser
                .dash
                .map_or(String::new(), |d| format!(" stroke-dasharray=\"{d}\""));
            let _ = writeln!(s, "<line x1=\"{x}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"{dash}/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>", x + 12.0, yy + 5.0, yy + 5.0, ser.color(i), x + 16.0, yy + 9.0, esc(&ser.name));
        }
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

    #[test]
    fn linear_ticks_are_nice() {
        let a = Axis::new([0.0, 38.3].into_iter(), false, true);
        assert_eq!(a.ticks(), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(130.0), 200.0);
    }

    #[test]
    fn log_axis_ticks_are_decades() {
        let a = Axis::new([3.0, 450.0].into_iter(), true, true);
        assert_eq!(a.ticks(), vec![1.0, 10.0, 100.0, 1000.0]);
        assert!((a.frac(10.0) - 1.0 / 3.0).abs() < 1e-9);
    }
}
