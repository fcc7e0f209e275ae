//! Checkpoints: the weights plus what is needed to trust them (the
//! fingerprint and token list they were trained under, the config, the
//! losses, the baselines that turn losses into scores).
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! magic "PRPRCKPT" | SHA-256 of everything after it (32 bytes)
//! | format version u32 | metadata length u64 | metadata (MessagePack)
//! | weights length u64 | weights (libtorch's named-tensor stream)
//! ```
//!
//! The hash is checked before anything else is parsed, so a truncated or
//! altered file is refused as such, and libtorch only ever sees bytes that
//! were written by [`Checkpoint::to_bytes`]. Everything goes through memory,
//! so the same bytes can live in a file or in the NATS object store.

use super::gpt::Gpt;
use super::GptConfig;
use crate::baseline::Baselines;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const MAGIC: &[u8; 8] = b"PRPRCKPT";
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    /// Freshness fingerprint of the system the model was trained on.
    pub fingerprint: String,
    /// [`crate::tokenizer::token_list_hash`] at training time.
    pub token_hash: String,
    pub config: GptConfig,
    /// Training steps taken in total, over all incremental runs.
    pub step: u64,
    pub train_loss: f32,
    /// NaN when nothing could be held out for validation.
    pub val_loss: f32,
    pub baselines: Baselines,
    pub created_at_ms: i64,
    /// How events were rendered for training: a scorer renders the same way,
    /// whatever its own settings. Older checkpoints get the built-in rendering.
    #[serde(default)]
    pub render: crate::curriculum::RenderConfig,
    /// The vocabulary the model reads ([`crate::vocab`]), learned at its cold
    /// start; older checkpoints read bytes and special tokens.
    #[serde(default = "crate::vocab::Vocab::bytes")]
    pub vocab: std::sync::Arc<crate::vocab::Vocab>,
    /// First 12 hex digits of the SHA-256 of the weights: names the model in
    /// logs and alerts. Derived when the checkpoint is serialised.
    pub version: String,
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "not a proprio checkpoint (no {:?} magic)",
        String::from_utf8_lossy(MAGIC)
    )]
    NotACheckpoint,
    #[error("checkpoint truncated: {0}")]
    Truncated(String),
    #[error("checkpoint corrupt: content hash is {actual} but the header records {expected} (truncated or altered)")]
    HashMismatch { expected: String, actual: String },
    #[error(
        "checkpoint format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version { found: u32 },
    #[error("checkpoint was trained under token list {checkpoint}, but this build's token list is {current}: refusing to load it (retrain under the current proto/tokens.txt)")]
    TokenList { checkpoint: String, current: String },
    #[error("checkpoint metadata: {0}")]
    Meta(String),
    #[error("checkpoint weights: {0}")]
    Weights(String),
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub gpt: Gpt,
}

impl Checkpoint {
    /// Wraps a model with fresh metadata: the current token list, the model's
    /// config, now as the creation time; step 0, NaN losses and empty
    /// baselines until the caller fills them in.
    pub fn new(gpt: Gpt, fingerprint: impl Into<String>) -> Checkpoint {
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            fingerprint: fingerprint.into(),
            token_hash: crate::tokenizer::token_list_hash(),
            config: *gpt.config(),
            step: 0,
            train_loss: f32::NAN,
            val_loss: f32::NAN,
            baselines: Baselines::default(),
            created_at_ms,
            render: Default::default(),
            vocab: crate::vocab::Vocab::bytes(),
            version: weights_bytes(&gpt)
                .map(|w| short_hash(&w))
                .unwrap_or_default(),
        };
        Checkpoint { meta, gpt }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let weights = weights_bytes(&self.gpt)?;
        let mut meta = self.meta.clone();
        meta.format_version = FORMAT_VERSION;
        meta.config = *self.gpt.config();
        meta.version = short_hash(&weights);
        let meta = rmp_serde::to_vec_named(&meta).context("encoding checkpoint metadata")?;
        let mut body = Vec::with_capacity(4 + 8 + meta.len() + 8 + weights.len());
        body.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        body.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        body.extend_from_slice(&meta);
        body.extend_from_slice(&(weights.len() as u64).to_le_bytes());
        body.extend_from_slice(&weights);
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads a checkpoint, refusing one that is corrupt, of another format,
    /// or made under another token list.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        let (meta, weights) = parse(bytes)?;
        let current = crate::tokenizer::token_list_hash();
        if meta.token_hash != current {
            return Err(CheckpointError::TokenList {
                checkpoint: meta.token_hash,
                current,
            }
            .into());
        }
        if meta.config.vocab_size != meta.vocab.len() {
            return Err(CheckpointError::Meta(format!(
                "vocab_size {} does not match its vocabulary's {} tokens",
                meta.config.vocab_size,
                meta.vocab.len()
            ))
            .into());
        }
        meta.config
            .validate()
            .map_err(|e| CheckpointError::Meta(e.to_string()))?;
        let mut gpt = Gpt::new(meta.config, 0)?;
        load_weights(&mut gpt, weights)?;
        Ok(Checkpoint { meta, gpt })
    }

    /// The metadata alone (hash verified, token list not checked), e.g. to
    /// compare fingerprints before deciding to load.
    pub fn read_meta(bytes: &[u8]) -> Result<CheckpointMeta> {
        Ok(parse(bytes)?.0)
    }

    /// Writes atomically: a temporary file in the same directory, flushed to
    /// disk, then renamed over `path`, so a reader sees the old checkpoint or
    /// the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself is durable only once the directory is synced;
            // not every platform lets a directory be opened, hence best effort.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing checkpoint {}", path.display()))
        })
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        Checkpoint::from_bytes(&bytes)
            .with_context(|| format!("loading checkpoint {}", path.display()))
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

fn weights_bytes(gpt: &Gpt) -> Result<Vec<u8>> {
    let mut w = Vec::new();
    gpt.var_store()
        .save_to_stream(&mut w)
        .context("serialising weights")?;
    Ok(w)
}

/// Checks magic and hash, then splits the body into metadata and weights.
fn parse(bytes: &[u8]) -> Result<(CheckpointMeta, &[u8]), CheckpointError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::Truncated(format!(
            "{} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        )));
    }
    let (expected, body) = (&bytes[8..HEADER], &bytes[HEADER..]);
    let actual = Sha256::digest(body);
    if actual.as_slice() != expected {
        return Err(CheckpointError::HashMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    let mut r = Reader { buf: body };
    let found = u32::from_le_bytes(r.take(4, "format version")?.try_into().unwrap_or_default());
    if found != FORMAT_VERSION {
        return Err(CheckpointError::Version { found });
    }
    let meta_len = r.len("metadata length")?;
    let meta: CheckpointMeta = rmp_serde::from_slice(r.take(meta_len, "metadata")?)
        .map_err(|e| CheckpointError::Meta(e.to_string()))?;
    let weights_len = r.len("weights length")?;
    let weights = r.take(weights_len, "weights")?;
    if !r.buf.is_empty() {
        return Err(CheckpointError::Meta(format!(
            "{} unexpected bytes after the weights",
            r.buf.len()
        )));
    }
    Ok((meta, weights))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CheckpointError> {
        if self.buf.len() < n {
            return Err(CheckpointError::Truncated(format!(
                "{what}: need {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn len(&mut self, what: &str) -> Result<usize, CheckpointError> {
        let b: [u8; 8] = self.take(8, what)?.try_into().unwrap_or_default();
        usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| CheckpointError::Truncated(format!("{what} too large")))
    }
}

/// Copies the stream's tensors into the model, insisting on exactly the
/// model's names, shapes and dtype (a plain copy would broadcast a wrong shape).
fn load_weights(gpt: &mut Gpt, bytes: &[u8]) -> Result<(), CheckpointError> {
    let named = Tensor::load_multi_from_stream_with_device(Cursor::new(bytes), Device::Cpu)
        .map_err(|e| CheckpointError::Weights(e.to_string()))?;
    let mut src: HashMap<String, Tensor> = named.into_iter().collect();
    let vars = gpt.var_store_mut().variables();
    if src.len() != vars.len() {
        return Err(CheckpointError::Weights(format!(
            "{} tensors, the model has {}",
            src.len(),
            vars.len()
        )));
    }
    tch::no_grad(|| {
        for (name, mut dst) in vars {
            let s = src
                .remove(&name)
                .ok_or_else(|| CheckpointError::Weights(format!("{name} missing")))?;
            let kind = s.f_kind().ok();
            if s.size() != dst.size() || kind != Some(Kind::Float) {
                return Err(CheckpointError::Weights(format!(
                    "{name}: {:?} {kind:?}, the model expects {:?} Float",
                    s.size(),
                    dst.size()
                )));
            }
            dst.f_copy_(&s)
                .map_err(|e| CheckpointError::Weights(format!("{name}: {e}")))?;
        }
        Ok(())
    })
}
