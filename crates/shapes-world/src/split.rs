//! Splits. Held out of training: the colour-shape pairs (yellow, triangle) and (blue, circle), and
//! the relation combinations "red ... below ... green" and "blue ... to the left of ... yellow".
//! Training and validation scenes avoid all of them; held-out scenes contain at least one.

use crate::render::{render, Image};
use crate::rng::SplitMix64;
use crate::scene::{Color, Object, Relation, Scene, Shape, COLORS, RELATIONS, SHAPES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Validation,
    HeldOut,
}

const HELD_OUT_PAIRS: [(Color, Shape); 2] = [
    (Color::Yellow, Shape::Triangle),
    (Color::Blue, Shape::Circle),
];
const HELD_OUT_RELATIONS: [(Color, Relation, Color); 2] = [
    (Color::Red, Relation::Below, Color::Green),
    (Color::Blue, Relation::LeftOf, Color::Yellow),
];

/// Whether a scene uses a held-out colour-shape pair or relation combination.
pub fn is_held_out(scene: &Scene) -> bool {
    let pair = |o: &Object| HELD_OUT_PAIRS.contains(&(o.color, o.shape));
    pair(&scene.first)
        || scene.second.is_some_and(|(rel, second)| {
            pair(&second) || HELD_OUT_RELATIONS.contains(&(scene.first.color, rel, second.color))
        })
}

fn random_scene(rng: &mut SplitMix64) -> Scene {
    let object = |rng: &mut SplitMix64| Object {
        color: COLORS[rng.below(4)],
        shape: SHAPES[rng.below(3)],
    };
    let first = object(rng);
    // One third single objects, two thirds pairs.
    if rng.below(3) == 0 {
        return Scene {
            first,
            second: None,
        };
    }
    let mut second = object(rng);
    while second.color == first.color {
        second.color = COLORS[rng.below(4)];
    }
    Scene {
        first,
        second: Some((RELATIONS[rng.below(4)], second)),
    }
}

/// A random scene of the split.
pub fn sample_scene(split: Split, rng: &mut SplitMix64) -> Scene {
    loop {
        let scene = random_scene(rng);
        if is_held_out(&scene) == (split == Split::HeldOut) {
            return scene;
        }
    }
}

/// A deterministic, indexable source of (image, caption) pairs for one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapesWorld {
    pub split: Split,
    pub size: usize,
    pub seed: u64,
}

impl ShapesWorld {
    /// Item `index`: the same scene and image every time, independent of other indices.
    pub fn get(&self, index: u64) -> (Scene, Image) {
        let split_salt = match self.split {
            Split::Train => 0x1111,
            Split::Validation => 0x2222,
            Split::HeldOut => 0x3333,
        };
        let mut rng =
            SplitMix64::new(self.seed ^ split_salt ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        loop {
            let scene = sample_scene(self.split, &mut rng);
            if let Some(image) = render(&scene, self.size, &mut rng) {
                return (scene, image);
            }
        }
    }
}

/// A deterministic, indexable source of renders of a fixed list of scenes: item `index` is scene
/// `index % len` at a layout (sizes, positions) drawn from `seed` and `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneList {
    pub scenes: Vec<Scene>,
    pub size: usize,
    pub seed: u64,
}

impl SceneList {
    /// Item `index`; `None` when the list is empty or the size admits no layout of the scene.
    pub fn get(&self, index: u64) -> Option<(Scene, Image)> {
        let scene = *self
            .scenes
            .get((index % self.scenes.len().max(1) as u64) as usize)?;
        let mut rng =
            SplitMix64::new(self.seed ^ 0x4444 ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // A failed placement is a rare unlucky draw at small sizes: retry a bounded number of times.
        (0..64).find_map(|_| render(&scene, self.size, &mut rng).map(|image| (scene, image)))
    }
}
