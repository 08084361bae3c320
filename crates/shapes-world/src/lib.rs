//! The shapes world: small RGB images of one or two coloured shapes with captions such as
//! "a red circle above a blue square", train / validation / held-out splits (held-out colour-shape
//! pairs and relation combinations never appear in training captions), and a rule-based scorer
//! that checks an image against its caption. Pure Rust, no tensors: the data crate and the reward
//! zoo wrap it.

mod render;
mod rng;
mod scene;
mod score;
mod split;
mod vocab;

pub use render::{render, Image, Placement};
pub use rng::SplitMix64;
pub use scene::{Color, Object, Relation, Scene, Shape, COLORS, RELATIONS, SHAPES};
pub use score::{checks, score, Checks, ShapesScore};
pub use split::{is_held_out, sample_scene, SceneList, ShapesWorld, Split};
pub use vocab::{caption_words, clip_tokenizer_files, clip_vocab_size};
