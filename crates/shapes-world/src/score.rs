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

/// Scores an RGB8 image (`size` x `size`) against a caption of this world. A caption outside the
/// world's grammar scores 0.
pub fn score(rgb: &[u8], size: usize, caption: &str) -> ShapesScore {
    let Some(scene) = Scene::parse(caption) else {
        return ShapesScore {
            partial: 0.0,
            all_correct: false,
        };
    };
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
    let mut checks = Vec::with_capacity(6);
    let a = found(scene.first);
    checks.push(a.is_some());
    checks.push(a.is_some_and(|c| shape_of(&c) == scene.first.shape));
    let expected_objects = match scene.second {
        None => 1,
        Some((relation, second)) => {
            let b = found(second);
            checks.push(b.is_some());
            checks.push(b.is_some_and(|c| shape_of(&c) == second.shape));
            checks.push(match (a, b) {
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
            });
            2
        }
    };
    checks.push(significant == expected_objects);
    let passed = checks.iter().filter(|&&c| c).count();
    ShapesScore {
        partial: passed as f64 / checks.len() as f64,
        all_correct: passed == checks.len(),
    }
}
