//! Where a chart's legend goes: inside the plot area at the first corner where it covers
//! no data (no point, bar, marker or line segment), else in a column right of the plot,
//! which then narrows to make room. A legend must never hide a measurement; matplotlib's
//! `loc="best"` only minimizes the overlap, which is why this is our own.

/// An axis-aligned box in SVG pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn contains(&self, (x, y): (f64, f64)) -> bool {
        x >= self.x && x <= self.x + self.w && y >= self.y && y <= self.y + self.h
    }

    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }

    /// Liang-Barsky: does the segment a-b cross this box?
    pub fn crosses(&self, a: (f64, f64), b: (f64, f64)) -> bool {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let edges = [
            (-dx, a.0 - self.x),
            (dx, self.x + self.w - a.0),
            (-dy, a.1 - self.y),
            (dy, self.y + self.h - a.1),
        ];
        for (p, q) in edges {
            if p == 0.0 {
                if q < 0.0 {
                    return false;
                }
            } else {
                let t = q / p;
                if p < 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
                if t0 > t1 {
                    return false;
                }
            }
        }
        true
    }
}

/// What a legend must not cover, in SVG pixels.
#[derive(Debug, Clone, Default)]
pub struct Obstacles {
    pub boxes: Vec<Rect>,
    pub lines: Vec<Vec<(f64, f64)>>,
}

impl Obstacles {
    fn hit(&self, r: &Rect) -> bool {
        self.boxes.iter().any(|b| r.overlaps(b))
            || self.lines.iter().any(|l| {
                l.iter().any(|&p| r.contains(p)) || l.windows(2).any(|s| r.crosses(s[0], s[1]))
            })
    }
}

/// Size of a legend with these entry names (11 px text, 15 px rows).
pub fn size(names: &[&str]) -> (f64, f64) {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    (22.0 + 6.5 * longest as f64, 15.0 * names.len() as f64 + 4.0)
}

/// The first free spot inside `plot` for a `w` x `h` legend: top-left, top-right,
/// bottom-right, bottom-left, then the middles of the top and bottom edges.
pub fn inside(plot: Rect, (w, h): (f64, f64), obstacles: &Obstacles) -> Option<Rect> {
    let pad = 6.0;
    let (left, right) = (plot.x + pad, plot.x + plot.w - w - pad);
    let (top, bottom) = (plot.y + pad, plot.y + plot.h - h - pad);
    let middle = plot.x + (plot.w - w) / 2.0;
    if right < left || bottom < top {
        return None;
    }
    [
        (left, top),
        (right, top),
        (right, bottom),
        (left, bottom),
        (middle, top),
        (middle, bottom),
    ]
    .into_iter()
    .map(|(x, y)| Rect { x, y, w, h })
    .find(|r| {
        // A margin keeps the legend off the markers' edges, not only their centres.
        let grown = Rect {
            x: r.x - 4.0,
            y: r.y - 4.0,
            w: r.w + 8.0,
            h: r.h + 8.0,
        };
        !obstacles.hit(&grown)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLOT: Rect = Rect {
        x: 0.0,
        y: 0.0,
        w: 400.0,
        h: 300.0,
    };

    #[test]
    fn segments_crossing_or_missing_a_box() {
        let r = Rect {
            x: 10.0,
            y: 10.0,
            w: 10.0,
            h: 10.0,
        };
        assert!(r.crosses((0.0, 15.0), (30.0, 15.0)));
        assert!(r.crosses((0.0, 0.0), (30.0, 30.0)));
        assert!(!r.crosses((0.0, 0.0), (30.0, 5.0)));
        assert!(!r.crosses((0.0, 25.0), (5.0, 30.0)));
    }

    #[test]
    fn the_first_free_corner_wins() {
        // A line along the top edge: both top corners are taken.
        let obstacles = Obstacles {
            boxes: vec![],
            lines: vec![vec![(0.0, 10.0), (400.0, 10.0)]],
        };
        let r = inside(PLOT, (80.0, 40.0), &obstacles).unwrap();
        assert_eq!((r.x, r.y), (400.0 - 80.0 - 6.0, 300.0 - 40.0 - 6.0));
    }

    #[test]
    fn no_free_corner_means_none() {
        let obstacles = Obstacles {
            boxes: vec![],
            lines: vec![
                vec![(0.0, 0.0), (400.0, 300.0)],
                vec![(0.0, 300.0), (400.0, 0.0)],
                vec![(0.0, 20.0), (400.0, 20.0)],
                vec![(0.0, 280.0), (400.0, 280.0)],
            ],
        };
        assert_eq!(inside(PLOT, (80.0, 40.0), &obstacles), None);
    }
}
