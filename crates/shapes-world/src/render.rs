//! Rendering scenes: black background, pure colours, no anti-aliasing; objects of 8-11 px (at
//! 32 px; scaled with the image size) placed with a clear margin on the relation's axis.

use crate::rng::SplitMix64;
use crate::scene::{Object, Relation, Scene, Shape};

/// An RGB8 image, `size` x `size`, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub size: usize,
    pub rgb: Vec<u8>,
}

/// Where an object is drawn: top-left corner and side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub x: usize,
    pub y: usize,
    pub side: usize,
}

impl Placement {
    fn center(&self) -> (f64, f64) {
        (
            self.x as f64 + self.side as f64 / 2.0,
            self.y as f64 + self.side as f64 / 2.0,
        )
    }
}

fn covers(shape: Shape, side: usize, dx: usize, dy: usize) -> bool {
    let s = side as f64;
    let (px, py) = (dx as f64 + 0.5, dy as f64 + 0.5);
    match shape {
        Shape::Square => true,
        Shape::Circle => (px - s / 2.0).powi(2) + (py - s / 2.0).powi(2) <= (s / 2.0).powi(2),
        // Apex at the top centre, base along the bottom row.
        Shape::Triangle => (px - s / 2.0).abs() <= py / 2.0,
    }
}

fn draw(image: &mut Image, object: Object, p: Placement) {
    let rgb = object.color.rgb();
    for dy in 0..p.side {
        for dx in 0..p.side {
            if covers(object.shape, p.side, dx, dy) {
                let i = ((p.y + dy) * image.size + p.x + dx) * 3;
                image.rgb[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }
}

/// Side range at this image size: 8..=11 at 32 px.
fn side_range(size: usize) -> (usize, usize) {
    ((8 * size).div_ceil(32).max(3), (11 * size / 32).max(4))
}

/// Renders `scene`; `None` when no placement satisfies the relation (tiny images).
pub fn render(scene: &Scene, size: usize, rng: &mut SplitMix64) -> Option<Image> {
    let (lo, hi) = side_range(size);
    let mut image = Image {
        size,
        rgb: vec![0; size * size * 3],
    };
    let side = |rng: &mut SplitMix64| lo + rng.below(hi - lo + 1);
    let place = |rng: &mut SplitMix64, side: usize| Placement {
        x: rng.below(size - side + 1),
        y: rng.below(size - side + 1),
        side,
    };
    match scene.second {
        None => {
            let s = side(rng);
            draw(&mut image, scene.first, place(rng, s));
        }
        Some((relation, second)) => {
            let (sa, sb) = (side(rng), side(rng));
            let found = (0..2000).find_map(|_| {
                let (a, b) = (place(rng, sa), place(rng, sb));
                let ((ax, ay), (bx, by)) = (a.center(), b.center());
                // Main axis: a's coordinate minus b's, positive when the relation holds.
                let (main, other) = match relation {
                    Relation::LeftOf => (bx - ax, ay - by),
                    Relation::RightOf => (ax - bx, ay - by),
                    Relation::Above => (by - ay, ax - bx),
                    Relation::Below => (ay - by, ax - bx),
                };
                let needed = (sa + sb) as f64 / 2.0 + 2.0;
                (main >= needed && other.abs() <= main / 2.0).then_some((a, b))
            })?;
            draw(&mut image, scene.first, found.0);
            draw(&mut image, second, found.1);
        }
    }
    Some(image)
}
