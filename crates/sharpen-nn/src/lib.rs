//! Layers shared by the SDXL UNet and VAE, named as diffusers names them so that module paths
//! equal checkpoint keys. Backend-generic; no IO.

pub mod attention;
pub mod dtype;
pub mod embeddings;
pub mod path;
pub mod resnet;
pub mod sampling;
pub mod transformer;

pub use attention::{multi_head_attention, Attention, AttentionMode};
pub use dtype::{cast_module, require_grad_all};
pub use embeddings::{timestep_embedding, TimestepEmbedding};
pub use resnet::{ResnetBlock2D, ResnetBlock2DConfig};
pub use sampling::{Downsample2D, Upsample2D};
pub use transformer::{
    BasicTransformerBlock, FeedForward, Geglu, Transformer2DModel, Transformer2DModelConfig,
};
