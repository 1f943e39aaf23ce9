//! Marker shapes as a plotters element, so that series stay distinguishable without colour.
//! plotters 0.3.7 has circles, triangles and crosses; squares, diamonds, downward triangles, plus
//! signs and stars are added here, all behind one element type used in series and legends; legend
//! samples (swatch, dashed line, marker) are a second element.

use plotters::element::{Drawable, PointCollection};
use plotters::style::{Color, RGBAColor, ShapeStyle};
use plotters_backend::{BackendCoord, DrawingBackend, DrawingErrorKind};

/// Marker shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Star,
}

/// Marker shape for palette slot `i` (cycles through the eight shapes).
pub(crate) fn shape_for(i: usize) -> Shape {
    const ALL: [Shape; 8] = [
        Shape::Circle,
        Shape::Square,
        Shape::TriangleUp,
        Shape::Diamond,
        Shape::TriangleDown,
        Shape::Cross,
        Shape::Plus,
        Shape::Star,
    ];
    ALL[i % ALL.len()]
}

/// A filled marker of "radius" `r` pixels centred at a point.
pub(crate) struct Marker<Coord> {
    at: Coord,
    shape: Shape,
    r: f64,
    color: RGBAColor,
}

impl<Coord> Marker<Coord> {
    pub(crate) fn new(at: Coord, shape: Shape, r: f64, color: RGBAColor) -> Self {
        Self {
            at,
            shape,
            r,
            color,
        }
    }
}

impl<'a, Coord> PointCollection<'a, Coord> for &'a Marker<Coord> {
    type Point = &'a Coord;
    type IntoIter = std::iter::Once<&'a Coord>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

/// Rounds a pixel offset (markers are a few pixels wide).
fn px(v: f64) -> i32 {
    v.round() as i32
}

impl<Coord, DB: DrawingBackend> Drawable<DB> for Marker<Coord> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((cx, cy)) = points.next() else {
            return Ok(());
        };
        let (x, y) = (f64::from(cx), f64::from(cy));
        let r = self.r;
        let fill = self.color.filled();
        let at = |dx: f64, dy: f64| (px(x + dx), px(y + dy));
        let stroke = ShapeStyle {
            color: self.color,
            filled: false,
            stroke_width: if r >= 3.0 { 3 } else { 2 },
        };
        match self.shape {
            Shape::Circle => backend.draw_circle((cx, cy), px(r).max(1) as u32, &fill, true),
            Shape::Square => {
                let h = r * 0.88;
                backend.draw_rect(at(-h, -h), at(h, h), &fill, true)
            }
            Shape::Diamond => {
                let h = r * 1.25;
                backend.fill_polygon([at(0.0, -h), at(h, 0.0), at(0.0, h), at(-h, 0.0)], &fill)
            }
            Shape::TriangleUp | Shape::TriangleDown => {
                let h = r * 1.25;
                let s = if self.shape == Shape::TriangleUp {
                    1.0
                } else {
                    -1.0
                };
                backend.fill_polygon(
                    [
                        at(0.0, -s * h),
                        at(h * 0.95, s * h * 0.7),
                        at(-h * 0.95, s * h * 0.7),
                    ],
                    &fill,
                )
            }
            Shape::Cross => {
                let h = r * 0.95;
                backend.draw_path([at(-h, -h), at(h, h)], &stroke)?;
                backend.draw_path([at(-h, h), at(h, -h)], &stroke)
            }
            Shape::Plus => {
                let h = r * 1.2;
                backend.draw_path([at(-h, 0.0), at(h, 0.0)], &stroke)?;
                backend.draw_path([at(0.0, -h), at(0.0, h)], &stroke)
            }
            Shape::Star => {
                let outer = r * 1.45;
                let inner = outer * 0.45;
                let points: Vec<BackendCoord> = (0..10)
                    .map(|i| {
                        let radius = if i % 2 == 0 { outer } else { inner };
                        let angle = std::f64::consts::PI * (f64::from(i) / 5.0 - 0.5);
                        at(radius * angle.cos(), radius * angle.sin())
                    })
                    .collect();
                backend.fill_polygon(points, &fill)
            }
        }
    }
}

/// A dash pattern: pixels drawn, pixels skipped.
pub(crate) type Dash = (i32, i32);

/// Dash patterns for series that share a colour or need to differ without colour (`None` is a
/// solid line).
pub(crate) const DASHES: [Option<Dash>; 4] = [None, Some((9, 5)), Some((3, 4)), Some((16, 5))];

/// The dashed line style of validation curves.
pub(crate) const DASHED: Option<Dash> = DASHES[1];

/// A legend entry's sample, `width` pixels wide, drawn from its left middle point: a filled
/// swatch, a (dashed) line and a marker, each optional.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) at: BackendCoord,
    pub(crate) width: i32,
    pub(crate) color: RGBAColor,
    pub(crate) swatch: bool,
    pub(crate) line: Option<Option<Dash>>,
    pub(crate) marker: Option<Shape>,
}

impl<'a> PointCollection<'a, BackendCoord> for &'a Sample {
    type Point = &'a BackendCoord;
    type IntoIter = std::iter::Once<&'a BackendCoord>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Sample {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        size: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = points.next() else {
            return Ok(());
        };
        let w = self.width;
        if self.swatch {
            let fill = self.color.mix(0.35).filled();
            backend.draw_rect((x + 4, y - 6), (x + w - 4, y + 6), &fill, true)?;
        }
        if let Some(dash) = self.line {
            let style = self.color.stroke_width(2);
            let (on, off) = dash.unwrap_or((w, 0));
            let mut start = 0;
            while start < w {
                let end = (start + on.max(1)).min(w);
                backend.draw_path([(x + start, y), (x + end, y)], &style)?;
                start = end + off;
            }
        }
        if let Some(shape) = self.marker {
            let marker = Marker::new((), shape, 4.5, self.color);
            marker.draw(std::iter::once((x + w / 2, y)), backend, size)?;
        }
        Ok(())
    }
}
