//! WebDataset tar shards (the Text-to-Image-2M layout): members grouped by key (the member path up
//! to the first `.` of its file name), an image (`jpg`, `jpeg`, `png`) and a caption: the JSON
//! member's `prompt` (or another field), else a `txt` member. Listing reads only the headers and
//! the small caption members; images are read from their offset in the shard when asked for.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::image::{decode_rgb_bytes, prepare};
use crate::{DataError, Skipped};

/// One example: where its image lies in which shard, and its caption.
#[derive(Debug, Clone, PartialEq)]
pub struct TarImage {
    pub shard: usize,
    /// The image member's name in the shard.
    pub member: String,
    pub offset: u64,
    pub size: u64,
    pub caption: String,
}

#[derive(Debug, Clone)]
pub struct WebDataset {
    pub root: PathBuf,
    pub shards: Vec<PathBuf>,
    pub items: Vec<TarImage>,
    /// Keys dropped while listing (no image, no caption, malformed JSON).
    pub skipped: Skipped,
}

#[derive(Default)]
struct Group {
    image: Option<(String, u64, u64)>,
    json: Option<Vec<u8>>,
    txt: Option<Vec<u8>>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// (key, extension) of a member name: `dir/000001.jpg` -> (`dir/000001`, `jpg`).
fn split_key(name: &str) -> Option<(&str, &str)> {
    let base = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base..].find('.')? + base;
    Some((&name[..dot], &name[dot + 1..]))
}

impl WebDataset {
    /// Lists a `.tar` shard, or every `.tar` in a folder (sorted by name). `caption_field` is the
    /// JSON caption's field (default `prompt`).
    pub fn open(path: &Path, caption_field: Option<&str>) -> Result<Self, DataError> {
        let shards: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io(path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "tar"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        if shards.is_empty() {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                message: "no .tar shards in this folder".into(),
            });
        }
        let field = caption_field.unwrap_or("prompt");
        let mut items = Vec::new();
        let mut skipped = Skipped::default();
        for (shard, shard_path) in shards.iter().enumerate() {
            let file = std::fs::File::open(shard_path).map_err(io(shard_path))?;
            let mut archive = tar::Archive::new(file);
            let mut groups: BTreeMap<String, Group> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            for entry in archive.entries().map_err(io(shard_path))? {
                let mut entry = entry.map_err(io(shard_path))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = entry
                    .path()
                    .map_err(io(shard_path))?
                    .to_string_lossy()
                    .into_owned();
                let Some((key, ext)) = split_key(&name) else {
                    continue;
                };
                let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
                if !groups.contains_key(&key) {
                    order.push(key.clone());
                }
                let group = groups.entry(key).or_default();
                match ext.as_str() {
                    "jpg" | "jpeg" | "png" => {
                        group.image = Some((name, entry.raw_file_position(), entry.size()));
                    }
                    "json" | "txt" => {
                        let mut bytes = Vec::new();
                        entry.read_to_end(&mut bytes).map_err(io(shard_path))?;
                        if ext == "json" {
                            group.json = Some(bytes);
                        } else {
                            group.txt = Some(bytes);
                        }
                    }
                    _ => {}
                }
            }
            let shard_name = shard_path.display();
            for key in order {
                let group = &groups[&key];
                let caption = match (&group.json, &group.txt) {
                    (Some(json), _) => match serde_json::from_slice::<serde_json::Value>(json) {
                        Ok(v) => v[field].as_str().map(str::to_string).or_else(|| {
                            group
                                .txt
                                .as_ref()
                                .map(|t| String::from_utf8_lossy(t).trim().to_string())
                        }),
                        Err(e) => {
                            skipped.add(format!("{shard_name}: {key}.json: {e}"));
                            continue;
                        }
                    },
                    (None, Some(txt)) => Some(String::from_utf8_lossy(txt).trim().to_string()),
                    (None, None) => None,
                };
                let Some(caption) = caption else {
                    skipped.add(format!(
                        "{shard_name}: {key}: no `{field}` in its json and no txt"
                    ));
                    continue;
                };
                let Some((member, offset, size)) = group.image.clone() else {
                    skipped.add(format!("{shard_name}: {key}: no image (jpg, jpeg or png)"));
                    continue;
                };
                items.push(TarImage {
                    shard,
                    member,
                    offset,
                    size,
                    caption,
                });
            }
        }
        Ok(Self {
            root: path.to_path_buf(),
            shards,
            items,
            skipped,
        })
    }

    /// Example `index` decoded and prepared (`size` x `size` RGB8). A corrupt image is an error
    /// the caller skips and counts.
    pub fn load(
        &self,
        index: usize,
        size: usize,
        flip: bool,
    ) -> Result<(Vec<u8>, &str), DataError> {
        let item = &self.items[index];
        let shard = &self.shards[item.shard];
        let mut file = std::fs::File::open(shard).map_err(io(shard))?;
        file.seek(SeekFrom::Start(item.offset)).map_err(io(shard))?;
        let mut bytes = vec![0u8; item.size as usize];
        file.read_exact(&mut bytes).map_err(io(shard))?;
        let name = shard.join(&item.member);
        let image = decode_rgb_bytes(&name, &bytes)?;
        Ok((prepare(&image, size, flip), &item.caption))
    }
}
