//! Original (SGM) key -> diffusers key, per component, as diffusers' `single_file_utils` maps them.

/// A component of an SDXL single file, with what its key mapping depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Unet { layers_per_block: usize },
    Vae { levels: usize },
    ClipL,
    ClipG,
}

impl Component {
    /// The prefixes the component's keys carry in the file (the first one that matches is used).
    pub fn prefixes(&self) -> &'static [&'static str] {
        match self {
            Self::Unet { .. } => &["model.diffusion_model."],
            Self::Vae { .. } => &["first_stage_model.", "vae."],
            Self::ClipL => &[
                "conditioner.embedders.0.transformer.",
                "cond_stage_model.transformer.",
            ],
            Self::ClipG => &["conditioner.embedders.1.model."],
        }
    }
}

/// How a diffusers tensor is obtained from a file tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derived {
    /// The file tensor as it is.
    Same,
    /// Rows `[part * n / parts, (part + 1) * n / parts)` of a fused tensor (OpenCLIP's q, k, v).
    Part { part: usize, parts: usize },
    /// The transpose of a 2-D tensor (OpenCLIP's `text_projection` is stored as `x @ P`).
    Transposed,
    /// A 1x1 convolution weight [o, i, 1, 1] used as a Linear weight [o, i] (VAE attention).
    Squeezed,
}

impl Derived {
    /// The shape of the derived tensor, given the file tensor's.
    pub fn shape(&self, shape: &[usize]) -> Vec<usize> {
        match self {
            Self::Same => shape.to_vec(),
            Self::Part { parts, .. } => {
                let mut s = shape.to_vec();
                s[0] /= parts;
                s
            }
            Self::Transposed => shape.iter().rev().copied().collect(),
            Self::Squeezed => shape[..2].to_vec(),
        }
    }

    /// The derived tensor from the file tensor's values (row-major) and shape.
    pub fn apply(&self, values: Vec<f32>, shape: &[usize]) -> burn::tensor::TensorData {
        let values = match self {
            Self::Same | Self::Squeezed => values,
            Self::Part { part, parts } => {
                let n = values.len() / parts;
                values[part * n..(part + 1) * n].to_vec()
            }
            Self::Transposed => {
                let (rows, cols) = (shape[0], shape[1]);
                (0..cols)
                    .flat_map(|c| (0..rows).map(move |r| (r, c)))
                    .map(|(r, c)| values[r * cols + c])
                    .collect()
            }
        };
        burn::tensor::TensorData::new(values, self.shape(shape))
    }
}

const RESNET: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

fn resnet(rest: &str) -> String {
    for (ldm, diffusers) in RESNET {
        if let Some(tail) = rest.strip_prefix(ldm) {
            return format!("{diffusers}{tail}");
        }
    }
    rest.to_string()
}

/// `a.b.rest` -> (a, b, rest) with a, b numbers.
fn two_indices(key: &str) -> Option<(usize, usize, &str)> {
    let (a, rest) = key.split_once('.')?;
    let (b, rest) = rest.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

fn unet(key: &str, layers: usize) -> Option<String> {
    const FIXED: [(&str, &str); 7] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (ldm, diffusers) in FIXED {
        if let Some(leaf) = key.strip_prefix(ldm) {
            return Some(format!("{diffusers}{leaf}"));
        }
    }
    let per = layers + 1;
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (i, j, rest) = two_indices(rest)?;
        let (b, l) = ((i.checked_sub(1)?) / per, (i - 1) % per);
        return match j {
            0 => match rest.strip_prefix("op.") {
                Some(leaf) => Some(format!("down_blocks.{b}.downsamplers.0.conv.{leaf}")),
                None => Some(format!("down_blocks.{b}.resnets.{l}.{}", resnet(rest))),
            },
            1 => Some(format!("down_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (k, rest) = rest.split_once('.')?;
        return match k.parse::<usize>().ok()? {
            0 => Some(format!("mid_block.resnets.0.{}", resnet(rest))),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            2 => Some(format!("mid_block.resnets.1.{}", resnet(rest))),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (i, j, rest) = two_indices(rest)?;
        let (b, l) = (i / per, i % per);
        return match (j, rest.strip_prefix("conv.")) {
            (0, _) => Some(format!("up_blocks.{b}.resnets.{l}.{}", resnet(rest))),
            (1 | 2, Some(leaf)) => Some(format!("up_blocks.{b}.upsamplers.0.conv.{leaf}")),
            (1, None) => Some(format!("up_blocks.{b}.attentions.{l}.{rest}")),
            _ => None,
        };
    }
    None
}

fn vae(key: &str, levels: usize) -> Option<(String, Derived)> {
    let (side, rest) = key.split_once('.')?;
    if side == "quant_conv" || side == "post_quant_conv" {
        return Some((key.to_string(), Derived::Same));
    }
    if side != "encoder" && side != "decoder" {
        return None;
    }
    let resnet = |r: &str| r.replacen("nin_shortcut.", "conv_shortcut.", 1);
    let mapped = if let Some(leaf) = rest.strip_prefix("norm_out.") {
        format!("conv_norm_out.{leaf}")
    } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        rest.to_string()
    } else if let Some(r) = rest.strip_prefix("down.") {
        let (i, r) = r.split_once('.')?;
        let i: usize = i.parse().ok()?;
        if let Some(leaf) = r.strip_prefix("downsample.conv.") {
            format!("down_blocks.{i}.downsamplers.0.conv.{leaf}")
        } else {
            let (j, r) = r.strip_prefix("block.")?.split_once('.')?;
            format!("down_blocks.{i}.resnets.{j}.{}", resnet(r))
        }
    } else if let Some(r) = rest.strip_prefix("up.") {
        let (k, r) = r.split_once('.')?;
        let i = levels.checked_sub(1)?.checked_sub(k.parse().ok()?)?;
        if let Some(leaf) = r.strip_prefix("upsample.conv.") {
            format!("up_blocks.{i}.upsamplers.0.conv.{leaf}")
        } else {
            let (j, r) = r.strip_prefix("block.")?.split_once('.')?;
            format!("up_blocks.{i}.resnets.{j}.{}", resnet(r))
        }
    } else if let Some(r) = rest.strip_prefix("mid.block_") {
        let (n, r) = r.split_once('.')?;
        let n: usize = n.parse().ok()?;
        format!("mid_block.resnets.{}.{}", n.checked_sub(1)?, resnet(r))
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (name, leaf) = r.split_once('.')?;
        let target = match name {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        let derived = if name != "norm" && leaf == "weight" {
            Derived::Squeezed
        } else {
            Derived::Same
        };
        return Some((
            format!("{side}.mid_block.attentions.0.{target}.{leaf}"),
            derived,
        ));
    } else {
        return None;
    };
    Some((format!("{side}.{mapped}"), Derived::Same))
}

fn clip_g(key: &str) -> Option<Vec<(String, Derived)>> {
    open_clip_tower(key, "text_model")
}

/// An open_clip text tower key (`token_embedding.weight`, `transformer.resblocks.0.attn.in_proj_weight`,
/// ...) in transformers naming under `tower` (`text_model`); fused q/k/v split in three.
pub(crate) fn open_clip_tower(key: &str, tower: &str) -> Option<Vec<(String, Derived)>> {
    let same = |k: String| Some(vec![(k, Derived::Same)]);
    match key {
        "positional_embedding" => {
            return same(format!("{tower}.embeddings.position_embedding.weight"))
        }
        "token_embedding.weight" => {
            return same(format!("{tower}.embeddings.token_embedding.weight"))
        }
        "text_projection" => {
            return Some(vec![("text_projection.weight".into(), Derived::Transposed)])
        }
        _ => {}
    }
    if let Some(leaf) = key.strip_prefix("ln_final.") {
        return same(format!("{tower}.final_layer_norm.{leaf}"));
    }
    let rest = key.strip_prefix("transformer.resblocks.")?;
    let (i, rest) = rest.split_once('.')?;
    let layer = format!("{tower}.encoder.layers.{i}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        return Some(
            ["q_proj", "k_proj", "v_proj"]
                .iter()
                .enumerate()
                .map(|(part, p)| {
                    (
                        format!("{layer}.self_attn.{p}.{kind}"),
                        Derived::Part { part, parts: 3 },
                    )
                })
                .collect(),
        );
    }
    const RENAMES: [(&str, &str); 5] = [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    RENAMES
        .iter()
        .find_map(|(ldm, diffusers)| {
            rest.strip_prefix(ldm)
                .map(|leaf| format!("{layer}.{diffusers}{leaf}"))
        })
        .and_then(same)
}

/// The diffusers key(s) a file key (without the component prefix) loads into, and how. `None`:
/// the key has no place in the component (it is reported as unused).
pub fn map_key(component: Component, key: &str) -> Option<Vec<(String, Derived)>> {
    match component {
        Component::Unet { layers_per_block } => {
            unet(key, layers_per_block).map(|k| vec![(k, Derived::Same)])
        }
        Component::Vae { levels } => vae(key, levels).map(|kd| vec![kd]),
        // The CLIP ViT-L part is a transformers CLIPTextModel state dict under a prefix.
        Component::ClipL => Some(vec![(key.to_string(), Derived::Same)]),
        Component::ClipG => clip_g(key),
    }
}

/// diffusers UNet module name -> the original (SGM) module name: the inverse of the UNet key
/// mapping above, for names without the parameter leaf (`down_blocks.1.attentions.0.proj_in` ->
/// `input_blocks.4.1.proj_in`). `up_has_attention(b)`: whether up block `b` has attentions (its
/// upsampler is then the third entry of the last output block, else the second). None for names
/// outside the UNet's layout.
pub fn sgm_unet_module(
    name: &str,
    layers_per_block: usize,
    up_has_attention: &dyn Fn(usize) -> bool,
) -> Option<String> {
    const FIXED: [(&str, &str); 7] = [
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ];
    if let Some((_, sgm)) = FIXED.iter().find(|(d, _)| *d == name) {
        return Some(sgm.to_string());
    }
    let per = layers_per_block + 1;
    let resnet_inverse = |rest: &str| {
        let dotted = format!("{rest}.");
        RESNET
            .iter()
            .find_map(|(ldm, diffusers)| {
                dotted
                    .strip_prefix(diffusers)
                    .map(|tail| format!("{ldm}{tail}"))
            })
            .map(|s| s.trim_end_matches('.').to_string())
    };
    let split = |s: &str| -> Option<(usize, String, usize, String)> {
        // `b.kind.l.rest`
        let (b, s) = s.split_once('.')?;
        let (kind, s) = s.split_once('.')?;
        let (l, rest) = s.split_once('.')?;
        Some((
            b.parse().ok()?,
            kind.to_string(),
            l.parse().ok()?,
            rest.to_string(),
        ))
    };
    if let Some(s) = name.strip_prefix("down_blocks.") {
        let (b, kind, l, rest) = split(s)?;
        let i = 1 + b * per;
        return match kind.as_str() {
            "resnets" => Some(format!(
                "input_blocks.{}.0.{}",
                i + l,
                resnet_inverse(&rest)?
            )),
            "attentions" => Some(format!("input_blocks.{}.1.{rest}", i + l)),
            "downsamplers" if l == 0 => {
                let leaf = rest.strip_prefix("conv")?;
                Some(format!("input_blocks.{}.0.op{leaf}", i + layers_per_block))
            }
            _ => None,
        };
    }
    if let Some(s) = name.strip_prefix("mid_block.") {
        let (kind, s) = s.split_once('.')?;
        let (l, rest) = s.split_once('.')?;
        return match (kind, l) {
            ("resnets", "0") => Some(format!("middle_block.0.{}", resnet_inverse(rest)?)),
            ("attentions", "0") => Some(format!("middle_block.1.{rest}")),
            ("resnets", "1") => Some(format!("middle_block.2.{}", resnet_inverse(rest)?)),
            _ => None,
        };
    }
    if let Some(s) = name.strip_prefix("up_blocks.") {
        let (b, kind, l, rest) = split(s)?;
        return match kind.as_str() {
            "resnets" => Some(format!(
                "output_blocks.{}.0.{}",
                b * per + l,
                resnet_inverse(&rest)?
            )),
            "attentions" => Some(format!("output_blocks.{}.1.{rest}", b * per + l)),
            "upsamplers" if l == 0 => {
                let j = if up_has_attention(b) { 2 } else { 1 };
                Some(format!(
                    "output_blocks.{}.{j}.{rest}",
                    b * per + layers_per_block
                ))
            }
            _ => None,
        };
    }
    None
}
