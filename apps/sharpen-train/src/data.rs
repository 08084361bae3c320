//! Where training examples come from: the shapes world (images + captions, rendered on the fly)
//! or a prompt list. Example `i` is the same on every run, so the data position in a checkpoint
//! is one number.

use std::cell::{Cell, RefCell};

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use shapes_world::{Scene, SceneList, ShapesWorld, Split, SplitMix64};
use sharpen_data::{load_prompts, DataError, ImageFolder, ParquetImages, Skipped, WebDataset};

use crate::config::{DataConfig, Shard};

pub struct Example {
    pub prompt: String,
    /// RGB8, `resolution` x `resolution`, row-major (absent for prompt lists).
    pub image: Option<Vec<u8>>,
}

/// A captioned image dataset on disk.
pub enum Images {
    Folder(ImageFolder),
    Tar(WebDataset),
    Parquet(ParquetImages),
}

impl Images {
    fn len(&self) -> usize {
        match self {
            Images::Folder(f) => f.items.len(),
            Images::Tar(t) => t.items.len(),
            Images::Parquet(p) => p.items.len(),
        }
    }

    fn caption(&self, i: usize) -> &str {
        match self {
            Images::Folder(f) => &f.items[i].caption,
            Images::Tar(t) => &t.items[i].caption,
            Images::Parquet(p) => &p.items[i].caption,
        }
    }

    fn load(&self, i: usize, size: usize, flip: bool) -> Result<(Vec<u8>, &str), DataError> {
        match self {
            Images::Folder(f) => f.load(i, size, flip),
            Images::Tar(t) => t.load(i, size, flip),
            Images::Parquet(p) => p.load(i, size, flip),
        }
    }

    fn root(&self) -> &std::path::Path {
        match self {
            Images::Folder(f) => &f.root,
            Images::Tar(t) => &t.root,
            Images::Parquet(p) => &p.root,
        }
    }

    fn skipped(&self) -> &Skipped {
        match self {
            Images::Folder(f) => &f.skipped,
            Images::Tar(t) => &t.skipped,
            Images::Parquet(p) => &p.skipped,
        }
    }
}

/// Which row example `i` reads: file order, or (shuffled) a fresh permutation of the rows each
/// epoch, drawn from the run's seed and the epoch number, so that example `i` is the same row on
/// every run and after a resume.
pub struct Order {
    rows: u64,
    seed: Option<u64>,
    epoch: RefCell<Option<(u64, Vec<u64>)>>,
}

impl Order {
    pub fn new(rows: usize, shuffle: bool, seed: u64) -> Self {
        Self {
            rows: rows as u64,
            seed: shuffle.then_some(seed),
            epoch: RefCell::new(None),
        }
    }

    pub fn row(&self, i: u64) -> usize {
        let (epoch, pos) = (i / self.rows, i % self.rows);
        let Some(seed) = self.seed else {
            return pos as usize;
        };
        let mut cached = self.epoch.borrow_mut();
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            let mut rng = SplitMix64::new(seed ^ (epoch + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            let mut perm: Vec<u64> = (0..self.rows).collect();
            for k in (1..perm.len()).rev() {
                perm.swap(k, rng.below(k + 1));
            }
            *cached = Some((epoch, perm));
        }
        cached.as_ref().expect("just filled").1[pos as usize] as usize
    }
}

/// The scenes of the shapes world's `data.prompts`: each caption parsed, and rendered once at
/// `resolution` to check that it has a layout there.
pub fn listed_scenes(prompts: &[String], resolution: usize) -> anyhow::Result<Vec<Scene>> {
    let check = |prompt: &str| {
        let scene = Scene::parse(prompt).ok_or_else(|| {
            format!("`{prompt}` is not a shapes-world caption (\"a red circle\", \"a red circle above a blue square\")")
        })?;
        let one = SceneList {
            scenes: vec![scene],
            size: resolution,
            seed: 0,
        };
        one.get(0)
            .map(|_| scene)
            .ok_or_else(|| format!("`{prompt}` has no layout at {resolution} px"))
    };
    prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            check(prompt).map_err(|m| anyhow::anyhow!("config field `data.prompts[{i}]`: {m}"))
        })
        .collect()
}

/// The rows of a dataset.
enum Rows {
    Shapes(ShapesWorld),
    /// Listed scenes; with `Some(rows)`, example `i` is item `i % rows` of the list (a fixed set
    /// of layouts per scene), else a fresh layout every time.
    Scenes(SceneList, Option<u64>),
    Prompts(Vec<String>, Order),
    Images {
        order: Order,
        folder: Images,
        size: usize,
        random_flip: bool,
        /// Corrupt images met so far (skipped; reported at the end).
        corrupt: Cell<usize>,
    },
}

impl Rows {
    /// `seed` (the run's) orders shuffled datasets.
    fn open(config: &DataConfig, resolution: usize, seed: u64) -> anyhow::Result<Self> {
        Ok(match config {
            DataConfig::Shapes { seed, prompts, .. } if prompts.is_empty() => {
                Rows::Shapes(ShapesWorld {
                    split: Split::Train,
                    size: resolution,
                    seed: *seed,
                })
            }
            DataConfig::Shapes {
                seed,
                prompts,
                layouts,
            } => {
                let scenes = listed_scenes(prompts, resolution)?;
                let held_out = scenes
                    .iter()
                    .filter(|s| shapes_world::is_held_out(s))
                    .count();
                if held_out > 0 {
                    tracing::warn!(
                        "data.prompts: {held_out} of {} prompts use held-out combinations of the shapes world",
                        scenes.len()
                    );
                }
                let fixed = layouts.map(|k| (k * scenes.len()) as u64);
                Rows::Scenes(
                    SceneList {
                        scenes,
                        size: resolution,
                        seed: *seed,
                    },
                    fixed,
                )
            }
            DataConfig::Prompts {
                path,
                field,
                shuffle,
            } => {
                let (prompts, skipped) = load_prompts(path, field.as_deref())
                    .with_context(|| format!("reading prompts from {}", path.display()))?;
                if skipped.count > 0 {
                    tracing::warn!(
                        "{}: {} rows skipped: {:?}",
                        path.display(),
                        skipped.count,
                        skipped.reasons
                    );
                }
                let order = Order::new(prompts.len(), *shuffle, seed);
                Rows::Prompts(prompts, order)
            }
            DataConfig::ImageFolder {
                path,
                caption_column,
                random_flip,
                shuffle,
            } => {
                let folder = ImageFolder::open(path, caption_column.as_deref())
                    .with_context(|| format!("reading the image folder {}", path.display()))?;
                let order = Order::new(folder.items.len(), *shuffle, seed);
                Self::images(Images::Folder(folder), order, resolution, *random_flip)
            }
            DataConfig::Journeydb {
                annotations,
                images,
                caption_field,
                random_flip,
                shuffle,
            } => {
                let db = ImageFolder::journeydb(annotations, images, caption_field.as_deref())
                    .with_context(|| {
                        format!(
                            "reading JourneyDB annotations {} over {}",
                            annotations.display(),
                            images.display()
                        )
                    })?;
                let order = Order::new(db.items.len(), *shuffle, seed);
                Self::images(Images::Folder(db), order, resolution, *random_flip)
            }
            DataConfig::Parquet {
                path,
                image_column,
                caption_column,
                random_flip,
                shuffle,
            } => {
                let set =
                    ParquetImages::open(path, image_column.as_deref(), caption_column.as_deref())
                        .with_context(|| format!("reading the Parquet data {}", path.display()))?;
                let order = Order::new(set.items.len(), *shuffle, seed);
                Self::images(Images::Parquet(set), order, resolution, *random_flip)
            }
            DataConfig::Webdataset {
                path,
                caption_field,
                random_flip,
                shuffle,
            } => {
                let shards = WebDataset::open(path, caption_field.as_deref())
                    .with_context(|| format!("reading the WebDataset shards {}", path.display()))?;
                let order = Order::new(shards.items.len(), *shuffle, seed);
                Self::images(Images::Tar(shards), order, resolution, *random_flip)
            }
        })
    }

    fn images(folder: Images, order: Order, size: usize, random_flip: bool) -> Self {
        let skipped = folder.skipped();
        if skipped.count > 0 {
            tracing::warn!(
                "{}: {} rows skipped: {:?}",
                folder.root().display(),
                skipped.count,
                skipped.reasons
            );
        }
        Rows::Images {
            order,
            folder,
            size,
            random_flip,
            corrupt: Cell::new(0),
        }
    }

    fn get(&self, index: u64) -> Example {
        match self {
            Rows::Shapes(world) => {
                let (scene, image) = world.get(index);
                Example {
                    prompt: scene.to_string(),
                    image: Some(image.rgb),
                }
            }
            Rows::Scenes(list, fixed) => {
                let index = fixed.map_or(index, |rows| index % rows);
                // `listed_scenes` rendered every scene at this size.
                let (scene, image) = list.get(index).expect("a layout at the checked size");
                Example {
                    prompt: scene.to_string(),
                    image: Some(image.rgb),
                }
            }
            Rows::Prompts(list, order) => Example {
                prompt: list[order.row(index)].clone(),
                image: None,
            },
            Rows::Images {
                order,
                folder,
                size,
                random_flip,
                corrupt,
            } => {
                let n = folder.len() as u64;
                // A corrupt image is skipped (counted) in favour of the next row.
                for offset in 0..n {
                    let i = index + offset;
                    let flip = *random_flip && (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63) == 1;
                    match folder.load(order.row(i), *size, flip) {
                        Ok((pixels, caption)) => {
                            return Example {
                                prompt: caption.to_string(),
                                image: Some(pixels),
                            }
                        }
                        Err(e) => {
                            corrupt.set(corrupt.get() + 1);
                            tracing::warn!("skipped: {e}");
                        }
                    }
                }
                panic!(
                    "{}: no image of the dataset decodes",
                    folder.root().display()
                );
            }
        }
    }

    /// The caption of example `index`, without decoding its image (validation prompts).
    fn prompt(&self, index: u64) -> String {
        match self {
            Rows::Images { folder, order, .. } => folder.caption(order.row(index)).to_string(),
            _ => self.get(index).prompt,
        }
    }

    /// Corrupt images skipped so far.
    fn corrupt(&self) -> usize {
        match self {
            Rows::Images { corrupt, .. } => corrupt.get(),
            _ => 0,
        }
    }
}

/// Where training examples come from, for one rank of `world_size`: example `i` of rank `r` is
/// row `i * world_size + r` of the (shared, seeded) order, so the ranks read disjoint rows of
/// each pass.
pub struct Source {
    rows: Rows,
    rank: u64,
    world_size: u64,
}

impl Source {
    /// `seed` (the run's) orders shuffled datasets; every rank passes the same one.
    pub fn open(
        config: &DataConfig,
        resolution: usize,
        seed: u64,
        shard: Shard,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            rows: Rows::open(config, resolution, seed)?,
            rank: shard.rank as u64,
            world_size: shard.world_size as u64,
        })
    }

    fn row(&self, index: u64) -> u64 {
        index * self.world_size + self.rank
    }

    pub fn get(&self, index: u64) -> Example {
        self.rows.get(self.row(index))
    }

    /// The caption of example `index`, without decoding its image (validation prompts).
    pub fn prompt(&self, index: u64) -> String {
        self.rows.prompt(self.row(index))
    }

    /// Corrupt images skipped so far.
    pub fn corrupt(&self) -> usize {
        self.rows.corrupt()
    }

    /// Rows of the dataset (all ranks together); `None` for the endless shapes world.
    pub fn rows(&self) -> Option<usize> {
        match &self.rows {
            Rows::Shapes(_) | Rows::Scenes(_, None) => None,
            Rows::Scenes(_, Some(rows)) => Some(*rows as usize),
            Rows::Prompts(list, _) => Some(list.len()),
            Rows::Images { folder, .. } => Some(folder.len()),
        }
    }
}

/// RGB8 images -> [batch, 3, size, size] in [-1, 1] (what the VAE encodes).
pub fn image_tensor<B: Backend>(images: &[&[u8]], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = images
        .iter()
        .flat_map(|rgb| rgb.iter().map(|&v| v as f32 / 127.5 - 1.0))
        .collect();
    Tensor::<B, 4>::from_data(
        TensorData::new(values, [images.len(), size, size, 3]),
        device,
    )
    .permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_read_disjoint_rows_of_the_shared_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompts.txt");
        let prompts: Vec<String> = (0..10).map(|i| format!("prompt {i}")).collect();
        std::fs::write(&path, prompts.join("\n")).unwrap();
        let config = DataConfig::Prompts {
            path,
            field: None,
            shuffle: true,
        };
        let open =
            |rank, world_size| Source::open(&config, 32, 9, Shard { rank, world_size }).unwrap();
        let whole = open(0, 1);
        let all: Vec<String> = (0..10).map(|i| whole.get(i).prompt).collect();
        let (a, b) = (open(0, 2), open(1, 2));
        let mut mine: Vec<String> = (0..5)
            .flat_map(|i| [a.get(i).prompt, b.get(i).prompt])
            .collect();
        assert_eq!(
            mine, all,
            "interleaved, the ranks read the single-process order"
        );
        mine.sort();
        mine.dedup();
        assert_eq!(mine.len(), 10, "each row once per pass");
    }

    #[test]
    fn shapes_prompts_render_only_the_listed_captions() {
        let prompts = vec![
            "a red circle".to_string(),
            "A blue square above a green triangle ".to_string(),
        ];
        let config = DataConfig::Shapes {
            seed: 0,
            prompts,
            layouts: None,
        };
        let source = Source::open(&config, 32, 9, Shard::default()).unwrap();
        assert_eq!(source.rows(), None, "endless: fresh layouts every pass");
        let got: Vec<Example> = (0..6).map(|i| source.get(i)).collect();
        for (i, e) in got.iter().enumerate() {
            let want = ["a red circle", "a blue square above a green triangle"][i % 2];
            assert_eq!(e.prompt, want, "example {i}: the canonical caption");
            let image = e.image.as_ref().expect("an image");
            assert!(
                shapes_world::score(image, 32, want).all_correct,
                "example {i}"
            );
        }
        assert_ne!(got[0].image, got[2].image, "a new layout each time round");
        let bad = DataConfig::Shapes {
            layouts: None,
            seed: 0,
            prompts: vec!["a red circle".into(), "a purple circle".into()],
        };
        let err = format!(
            "{:#}",
            Source::open(&bad, 32, 9, Shard::default()).err().unwrap()
        );
        assert!(
            err.contains("data.prompts[1]") && err.contains("a purple circle"),
            "{err}"
        );
    }

    #[test]
    fn shapes_layouts_fix_a_small_dataset() {
        let prompts: Vec<String> = vec![
            "a red circle".into(),
            "a blue square above a green triangle".into(),
        ];
        let config = DataConfig::Shapes {
            seed: 0,
            prompts: prompts.clone(),
            layouts: Some(3),
        };
        let source = Source::open(&config, 32, 9, Shard::default()).unwrap();
        assert_eq!(source.rows(), Some(6), "2 captions x 3 layouts");
        let image = |i: u64| source.get(i).image.expect("an image");
        for i in 0..6 {
            assert_eq!(image(i), image(i + 6), "example {i} comes round again");
            assert_eq!(image(i), image(i + 60), "example {i} ten passes on");
        }
        for (a, b) in [(0, 2), (0, 4), (2, 4), (1, 3), (1, 5), (3, 5)] {
            assert_eq!(source.get(a).prompt, source.get(b).prompt);
            assert_ne!(
                image(a),
                image(b),
                "examples {a} and {b}: two layouts of one caption"
            );
        }
        // The fixed layouts are the first ones the endless list draws.
        let endless = DataConfig::Shapes {
            seed: 0,
            prompts,
            layouts: None,
        };
        let endless = Source::open(&endless, 32, 9, Shard::default()).unwrap();
        for i in 0..6 {
            assert_eq!(endless.get(i).image.unwrap(), image(i), "example {i}");
        }
        assert_ne!(endless.get(6).image.unwrap(), image(6));
    }

    #[test]
    fn shuffled_order_is_a_fresh_permutation_each_epoch() {
        let order = Order::new(7, true, 42);
        let epoch = |e: u64| (0..7).map(|i| order.row(e * 7 + i)).collect::<Vec<_>>();
        let (a, b) = (epoch(0), epoch(1));
        for p in [&a, &b] {
            let mut sorted = p.clone();
            sorted.sort();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        }
        assert_ne!(a, b, "each epoch draws its own order");
        assert_ne!(a, (0..7).collect::<Vec<_>>());
        assert_eq!(
            Order::new(7, true, 42).row(3),
            a[3],
            "the same on every run"
        );
        assert_eq!(epoch(0), a, "revisiting an epoch gives the same order");
        let plain = Order::new(7, false, 42);
        assert_eq!(
            (0..9).map(|i| plain.row(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 6, 0, 1]
        );
    }
}
