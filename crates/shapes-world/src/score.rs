//! The compositional scorer: parses the caption, finds each named colour's largest 4-connected
//! component, classifies its shape by how much of its bounding box it fills, checks the relation
//! by centroids and the number of objects. Partial credit is the mean of the checks (3 for one
//! object, 6 for two).

use crate::scene::{Color, Object, Relation, Scene, Shape, COLORS};

/// Smallest component that counts as an object.
const MIN_PIXELS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapesScore {
    /// Fraction of checks passed, in [0, 1].
    pub partial: f64,
    /// Every check passed.
    pub all_correct: bool,
}

#[derive(Debug, Clone, Copy)]
struct Component {
    pixels: usize,
    cx: f64,
    cy: f64,
    width: usize,
    height: usize,
}

/// Each pixel's nearest palette colour (`None`: background).
fn classify(rgb: &[u8]) -> Vec<Option<Color>> {
    rgb.chunks(3)
        .map(|p| {
            let dist = |c: [u8; 3]| {
                (0..3)
                    .map(|i| (p[i] as i32 - c[i] as i32).pow(2))
                    .sum::<i32>()
            };
            let best = COLORS
                .into_iter()
                .min_by_key(|c| dist(c.rgb()))
                .expect("palette");
            (dist(best.rgb()) < dist([0, 0, 0])).then_some(best)
        })
        .collect()
}

/// 4-connected components of one colour, largest first.
fn components(labels: &[Option<Color>], size: usize, color: Color) -> Vec<Component> {
    let mut seen = vec![false; labels.len()];
    let mut out = Vec::new();
    for start in 0..labels.len() {
        if seen[start] || labels[start] != Some(color) {
            continue;
        }
        let (mut n, mut sx, mut sy) = (0usize, 0usize, 0usize);
        let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % size, i / size);
            n += 1;
            sx += x;
            sy += y;
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            let mut push = |j: usize| {
                if !seen[j] && labels[j] == Some(color) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                push(i - 1);
            }
            if x + 1 < size {
                push(i + 1);
            }
            if y > 0 {
                push(i - size);
            }
            if y + 1 < size {
                push(i + size);
            }
        }
        out.push(Component {
            pixels: n,
            cx: sx as f64 / n as f64,
            cy: sy as f64 / n as f64,
            width: x1 - x0 + 1,
            height: y1 - y0 + 1,
        });
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.pixels));
    out
}

/// Shape by bounding-box fill: square ~1.0, circle ~0.75-0.81, triangle ~0.5-0.56.
fn shape_of(c: &Component) -> Shape {
    let fill = c.pixels as f64 / (c.width * c.height) as f64;
    if fill >= 0.9 {
        Shape::Square
    } else if fill >= 0.66 {
        Shape::Circle
    } else {
        Shape::Triangle
    }
}

/// The scorer's checks of one image against its caption, each on its own; the second object's
/// checks and the relation are `None` for a single-object caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// The first object's colour is there (a component of at least 8 pixels).
    pub first_found: bool,
    /// ... and its largest component has the named shape.
    pub first_shape: bool,
    pub second_found: Option<bool>,
    pub second_shape: Option<bool>,
    /// The two objects' centroids are in the named relation along its axis.
    pub relation: Option<bool>,
    /// The image has exactly as many objects (of any colour) as the caption names.
    pub count: bool,
}

impl Checks {
    /// Every check that applies, in the order first found, first shape, [second found, second
    /// shape, relation,] count.
    pub fn all(&self) -> Vec<bool> {
        [
            Some(self.first_found),
            Some(self.first_shape),
            self.second_found,
            self.second_shape,
            self.relation,
            Some(self.count),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Partial credit (the fraction of checks passed) and the all-correct flag.
    pub fn score(&self) -> ShapesScore {
        let all = self.all();
        let passed = all.iter().filter(|&&c| c).count();
        ShapesScore {
            partial: passed as f64 / all.len() as f64,
            all_correct: passed == all.len(),
        }
    }
}

/// Scores an RGB8 image (`size` x `size`) against a caption of this world. A caption outside the
/// world's grammar scores 0.
pub fn score(rgb: &[u8], size: usize, caption: &str) -> ShapesScore {
    checks(rgb, size, caption).map_or(
        ShapesScore {
            partial: 0.0,
            all_correct: false,
        },
        |c| c.score(),
    )
}

/// The scorer's checks of an RGB8 image (`size` x `size`) against a caption of this world;
/// `None` for a caption outside the world's grammar.
pub fn checks(rgb: &[u8], size: usize, caption: &str) -> Option<Checks> {
    let scene = Scene::parse(caption)?;
    let labels = classify(rgb);
    let found = |o: Object| {
        components(&labels, size, o.color)
            .into_iter()
            .next()
            .filter(|c| c.pixels >= MIN_PIXELS)
    };
    let significant: usize = COLORS
        .into_iter()
        .map(|c| {
            components(&labels, size, c)
                .iter()
                .filter(|k| k.pixels >= MIN_PIXELS)
                .count()
        })
        .sum();
    let a = found(scene.first);
    let shape_ok = |c: Option<Component>, o: Object| c.is_some_and(|c| shape_of(&c) == o.shape);
    let (second_found, second_shape, relation) = match scene.second {
        None => (None, None, None),
        Some((relation, second)) => {
            let b = found(second);
            let related = match (a, b) {
                (Some(a), Some(b)) => {
                    let (dx, dy) = (b.cx - a.cx, b.cy - a.cy);
                    match relation {
                        Relation::LeftOf => dx > 0.0 && dx.abs() >= dy.abs(),
                        Relation::RightOf => dx < 0.0 && dx.abs() >= dy.abs(),
                        Relation::Above => dy > 0.0 && dy.abs() >= dx.abs(),
                        Relation::Below => dy < 0.0 && dy.abs() >= dx.abs(),
                    }
                }
                _ => false,
            };
            (Some(b.is_some()), Some(shape_ok(b, second)), Some(related))
        }
    };
    let expected_objects = if scene.second.is_some() { 2 } else { 1 };
    Some(Checks {
        first_found: a.is_some(),
        first_shape: shape_ok(a, scene.first),
        second_found,
        second_shape,
        relation,
        count: significant == expected_objects,
    })
}
