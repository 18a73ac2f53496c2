//! Converts a Whisper model from CTranslate2's format (`model.bin` + `tokenizer.json`, as the
//! pinned Python packages ship it) into the ggml file that whisper.cpp loads, in pure Rust.
//!
//! The only model packages that can be had offline carry CTranslate2 weights, while the ASR worker
//! runs whisper.cpp; this module bridges the two at install time. It reads the source directory,
//! writes one output file (through a temporary file renamed into place, so a failure never leaves
//! a half-written model behind), and does nothing else: no network, no other files.
//!
//! The conversion must be faithful: whisper.cpp checks only element counts and byte sizes when it
//! loads, so a wrong dtype or a misplaced slice loads without complaint and transcribes garbage.
//! The integration test `tests/convert_matches_ctranslate2.rs` holds it to word-for-word agreement
//! with CTranslate2 on the original weights.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde::Deserialize;

/// The only CTranslate2 binary layout this reader knows; older ones encode dtypes differently.
const CT2_BINARY_VERSION: u32 = 6;
const CT2_WHISPER_SPEC: &str = "WhisperSpec";
/// `"ggml"` read as a little-endian u32, as whisper.cpp checks it.
const GGML_MAGIC: u32 = 0x6767_6d6c;
/// Model-wide ftype 1: 2-D weights are f16, which is what whisper.cpp expects for unquantized
/// models.
const GGML_FTYPE_F16: i32 = 1;
/// whisper.cpp hard-codes `<|endoftext|>` at this id (one higher for multilingual vocabularies)
/// and derives every other special token from it.
const WHISPER_CPP_EOT_ENGLISH: usize = 50256;
/// whisper.cpp treats a vocabulary at least this large as multilingual.
const MULTILINGUAL_MIN_VOCAB: usize = 51865;
/// Whisper's audio front end, fixed by the model family.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;
/// Every Whisper size uses 64-dimensional heads; only used when the file lacks `num_heads`.
const WHISPER_HEAD_DIM: usize = 64;

/// What a conversion produced, for the installer to log and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    pub n_vocab: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
    /// Number of tensors written to the ggml file.
    pub n_tensors: usize,
    /// Number of vocabulary entries written (the ordinary BPE tokens before `<|endoftext|>`).
    pub n_vocab_entries: usize,
    pub multilingual: bool,
    /// Storage type of the source weights, e.g. `"f16"` or `"int8"`.
    pub source_dtype: &'static str,
    pub output_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "cannot read {path}: {source}; the CTranslate2 model directory must hold model.bin, \
         config.json and tokenizer.json: reinstall the model package"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a CTranslate2 Whisper model (its spec is {spec:?}, expected \
         \"WhisperSpec\"): check that the model package configured for ASR is a Whisper model"
    )]
    WrongSpec { path: PathBuf, spec: String },
    #[error(
        "{path} uses CTranslate2 binary version {version}, but only version \
         {CT2_BINARY_VERSION} can be converted: install a model package exported by \
         CTranslate2 3.x or 4.x"
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path}: variable {name} has unknown dtype code {code}; the file is damaged or from an \
         unsupported CTranslate2 release: reinstall the model package"
    )]
    UnknownDtype {
        path: PathBuf,
        name: String,
        code: u8,
    },
    #[error(
        "{path}: weight {name} is stored as {dtype}, which cannot hold Whisper weights; the file \
         is damaged: reinstall the model package"
    )]
    UnsupportedWeightDtype {
        path: PathBuf,
        name: String,
        dtype: &'static str,
    },
    #[error(
        "{path}: tensor {name} is missing, so this is not a complete Whisper model: reinstall \
         the model package"
    )]
    MissingTensor { path: PathBuf, name: String },
    #[error(
        "{path}: tensor {name} has shape {shape:?} but {expected}; the file is damaged or not \
         a standard Whisper model: reinstall the model package"
    )]
    BadShape {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error(
        "{path} ends early (at byte {offset}, while reading {what}): the download or copy is \
         incomplete: reinstall the model package"
    )]
    Truncated {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    #[error(
        "{path}: the tokenizer cannot be used ({reason}): reinstall the model package; its \
         tokenizer.json must be the one exported with the model"
    )]
    Tokenizer { path: PathBuf, reason: String },
    #[error(
        "cannot write the converted model {path}: {source}; check free disk space and that the \
         models directory is writable by the edge-scribe user"
    )]
    Write { path: PathBuf, source: io::Error },
}

/// Converts the CTranslate2 Whisper model in `ct2_dir` into a whisper.cpp ggml file at
/// `out_file`, replacing any file already there only once the new one is complete.
pub fn convert_ct2_to_ggml(ct2_dir: &Path, out_file: &Path) -> Result<ConvertReport, ConvertError> {
    let model_path = ct2_dir.join("model.bin");
    let tokenizer_path = ct2_dir.join("tokenizer.json");
    // config.json carries nothing the ggml file needs, but a directory without it is an
    // incomplete install, and catching that here beats a confusing failure later.
    let config_path = ct2_dir.join("config.json");
    std::fs::metadata(&config_path).map_err(|source| ConvertError::Read {
        path: config_path.clone(),
        source,
    })?;

    let model_bytes = std::fs::read(&model_path).map_err(|source| ConvertError::Read {
        path: model_path.clone(),
        source,
    })?;
    let model = Ct2Model::parse(&model_bytes, &model_path)?;
    let plan = Plan::new(&model)?;

    let tokenizer_bytes = std::fs::read(&tokenizer_path).map_err(|source| ConvertError::Read {
        path: tokenizer_path.clone(),
        source,
    })?;
    let vocab = read_vocab(&tokenizer_bytes, &tokenizer_path, plan.hparams.n_vocab)?;

    let out_dir = match out_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write_err = |source: io::Error| ConvertError::Write {
        path: out_file.to_path_buf(),
        source,
    };
    // Same directory as the target, so the final rename is atomic and never crosses devices.
    let tmp = tempfile::Builder::new()
        .prefix(".ggml-convert-")
        .suffix(".partial")
        .tempfile_in(out_dir)
        .map_err(write_err)?;
    let mut writer = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let output_bytes = write_ggml(&mut writer, &model, &plan, &vocab).map_err(|e| match e {
        WriteError::Io(source) => write_err(source),
        WriteError::Convert(e) => e,
    })?;
    writer.flush().map_err(write_err)?;
    drop(writer);
    tmp.as_file().sync_all().map_err(write_err)?;
    // A model is not secret, and the worker may run as another user than the installer;
    // tempfile creates files private to their owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(write_err)?;
    }
    tmp.persist(out_file).map_err(|e| write_err(e.error))?;

    let h = &plan.hparams;
    Ok(ConvertReport {
        n_vocab: h.n_vocab,
        n_audio_state: h.n_audio_state,
        n_audio_head: h.n_audio_head,
        n_audio_layer: h.n_audio_layer,
        n_text_state: h.n_text_state,
        n_text_head: h.n_text_head,
        n_text_layer: h.n_text_layer,
        n_mels: h.n_mels,
        n_tensors: plan.tensors.len(),
        n_vocab_entries: vocab.len(),
        multilingual: h.n_vocab >= MULTILINGUAL_MIN_VOCAB,
        source_dtype: plan.source_dtype.name(),
        output_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// CTranslate2 model.bin

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Clone)]
struct Variable<'a> {
    shape: Vec<usize>,
    dtype: Dtype,
    data: &'a [u8],
}

impl Variable<'_> {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element `i` widened to f32, before any quantization scale is applied.
    fn raw(&self, i: usize) -> f32 {
        let b = &self.data[i * self.dtype.size()..];
        match self.dtype {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            Dtype::Bf16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            Dtype::I8 => f32::from(b[0] as i8),
            Dtype::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
            // Only scalars (flags, counts) are stored as int32; the cast is exact for them.
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        }
    }
}

/// A parsed `model.bin`: every variable borrowed from the file's bytes, aliases resolved.
struct Ct2Model<'a> {
    path: PathBuf,
    vars: BTreeMap<String, Variable<'a>>,
}

struct Reader<'a, 'p> {
    buf: &'a [u8],
    pos: usize,
    path: &'p Path,
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], ConvertError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            _ => Err(ConvertError::Truncated {
                path: self.path.to_path_buf(),
                offset: self.buf.len(),
                what: what(),
            }),
        }
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, ConvertError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, ConvertError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, ConvertError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A CTranslate2 string: u16 length counting the trailing NUL, then the bytes and the NUL.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, ConvertError> {
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl<'a> Ct2Model<'a> {
    fn parse(buf: &'a [u8], path: &Path) -> Result<Self, ConvertError> {
        let mut r = Reader { buf, pos: 0, path };
        let version = r.u32(&|| "the header".into())?;
        if version != CT2_BINARY_VERSION {
            return Err(ConvertError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let spec = r.string(&|| "the model spec name".into())?;
        if spec != CT2_WHISPER_SPEC {
            return Err(ConvertError::WrongSpec {
                path: path.to_path_buf(),
                spec,
            });
        }
        let _spec_revision = r.u32(&|| "the spec revision".into())?;
        let n_vars = r.u32(&|| "the variable count".into())?;

        let mut vars = BTreeMap::new();
        for index in 0..n_vars {
            let name = r.string(&|| format!("the name of variable {index}"))?;
            let what = || format!("variable {name}");
            let rank = r.u8(&what)?;
            let mut shape = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                shape.push(r.u32(&what)? as usize);
            }
            let code = r.u8(&what)?;
            let dtype = Dtype::from_code(code).ok_or_else(|| ConvertError::UnknownDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                code,
            })?;
            let nbytes = r.u32(&what)? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
            if expected != Some(nbytes) {
                return Err(ConvertError::BadShape {
                    path: path.to_path_buf(),
                    name,
                    shape,
                    expected: format!("its data is {nbytes} bytes of {}", dtype.name()),
                });
            }
            let data = r.take(nbytes, &what)?;
            vars.insert(name, Variable { shape, dtype, data });
        }

        // Aliases let CTranslate2 store a tied weight once (the output projection is the token
        // embedding); resolve them so lookups by either name work.
        let n_aliases = r.u32(&|| "the alias count".into())?;
        for index in 0..n_aliases {
            let alias = r.string(&|| format!("alias {index}"))?;
            let target = r.string(&|| format!("the target of alias {alias}"))?;
            if let Some(var) = vars.get(&target).cloned() {
                vars.insert(alias, var);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            vars,
        })
    }

    fn get(&self, name: &str) -> Result<&Variable<'a>, ConvertError> {
        self.vars
            .get(name)
            .ok_or_else(|| ConvertError::MissingTensor {
                path: self.path.clone(),
                name: name.to_owned(),
            })
    }

    fn bad_shape(&self, name: &str, expected: String) -> ConvertError {
        ConvertError::BadShape {
            path: self.path.clone(),
            name: name.to_owned(),
            shape: self
                .vars
                .get(name)
                .map(|v| v.shape.clone())
                .unwrap_or_default(),
            expected,
        }
    }

    /// Shape of a tensor that must be 2-D, as (rows, columns).
    fn dims2(&self, name: &str) -> Result<(usize, usize), ConvertError> {
        match self.get(name)?.shape[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(self.bad_shape(name, "it must be 2-D".into())),
        }
    }

    /// A scalar stored as a variable, e.g. `encoder/num_heads`.
    fn scalar(&self, name: &str) -> Option<f32> {
        self.vars
            .get(name)
            .filter(|v| v.len() == 1)
            .map(|v| v.raw(0))
    }

    /// Counts `{prefix}/layer_{i}/…` blocks, which must be numbered from 0 without gaps.
    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let probe = format!("{prefix}/layer_{i}/");
                self.vars
                    .range(probe.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&probe))
            })
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping onto whisper.cpp's tensors

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hparams {
    n_vocab: usize,
    n_audio_ctx: usize,
    n_audio_state: usize,
    n_audio_head: usize,
    n_audio_layer: usize,
    n_text_ctx: usize,
    n_text_state: usize,
    n_text_head: usize,
    n_text_layer: usize,
    n_mels: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutType {
    F32,
    F16,
}

/// One ggml tensor to write: which CTranslate2 variable it comes from and which rows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorPlan {
    name: String,
    source: String,
    /// `Some((index, count))`: the `index`-th of `count` equal row blocks of a fused tensor.
    part: Option<(usize, usize)>,
    /// Shape in CTranslate2 (row-major, outermost first) order; reversed when written.
    shape: Vec<usize>,
    out: OutType,
}

struct Plan {
    hparams: Hparams,
    tensors: Vec<TensorPlan>,
    source_dtype: Dtype,
}

impl Plan {
    fn new(model: &Ct2Model<'_>) -> Result<Self, ConvertError> {
        let (n_vocab, n_text_state) = model.dims2("decoder/embeddings/weight")?;
        let (n_text_ctx, text_pos_state) = model.dims2("decoder/position_encodings/encodings")?;
        let (n_audio_ctx, n_audio_state) = model.dims2("encoder/position_encodings/encodings")?;
        if text_pos_state != n_text_state {
            return Err(model.bad_shape(
                "decoder/position_encodings/encodings",
                format!("its width must match the embedding width {n_text_state}"),
            ));
        }
        let conv1 = "encoder/conv1/weight";
        let n_mels = match model.get(conv1)?.shape[..] {
            [out, mels, 3] if out == n_audio_state => mels,
            _ => {
                return Err(
                    model.bad_shape(conv1, format!("it must be [{n_audio_state}, n_mels, 3]"))
                )
            }
        };
        let heads = |prefix: &str, state: usize| {
            model
                .scalar(&format!("{prefix}/num_heads"))
                .map(|h| h as usize)
                .filter(|&h| h > 0)
                .unwrap_or(state / WHISPER_HEAD_DIM)
        };
        let hparams = Hparams {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head: heads("encoder", n_audio_state),
            n_audio_layer: model.count_layers("encoder"),
            n_text_ctx,
            n_text_state,
            n_text_head: heads("decoder", n_text_state),
            n_text_layer: model.count_layers("decoder"),
            n_mels,
        };
        if hparams.n_audio_layer == 0 || hparams.n_text_layer == 0 {
            return Err(ConvertError::MissingTensor {
                path: model.path.clone(),
                name: "encoder/layer_0 and decoder/layer_0".into(),
            });
        }

        let tensors = tensor_plans(&hparams);
        for t in &tensors {
            check_source(model, t)?;
        }
        let source_dtype = model.get("decoder/embeddings/weight")?.dtype;
        Ok(Self {
            hparams,
            tensors,
            source_dtype,
        })
    }
}

/// Every tensor whisper.cpp expects, in the order openai's checkpoint lists them. whisper.cpp
/// refuses a file with a tensor it does not know or without one it needs, so this list is
/// exactly its list.
fn tensor_plans(h: &Hparams) -> Vec<TensorPlan> {
    let mut plans = Vec::new();
    let mut add = |name: String, source: String, part, shape: Vec<usize>| {
        // whisper.cpp keeps matrices in the model-wide f16 and everything that is added to f32
        // activations in f32: 1-D tensors, the [n, 1] conv biases and the positional embeddings.
        let out = if shape.len() >= 2
            && !name.ends_with(".bias")
            && !name.ends_with("positional_embedding")
        {
            OutType::F16
        } else {
            OutType::F32
        };
        plans.push(TensorPlan {
            name,
            source,
            part,
            shape,
            out,
        });
    };

    let (a, t) = (h.n_audio_state, h.n_text_state);
    // Positional embeddings are added to f32 activations, so whisper.cpp wants them in f32
    // although they are 2-D.
    add(
        "encoder.positional_embedding".into(),
        "encoder/position_encodings/encodings".into(),
        None,
        vec![h.n_audio_ctx, a],
    );
    add(
        "encoder.conv1.weight".into(),
        "encoder/conv1/weight".into(),
        None,
        vec![a, h.n_mels, 3],
    );
    // Conv biases are [n, 1] in whisper.cpp so they broadcast over time.
    add(
        "encoder.conv1.bias".into(),
        "encoder/conv1/bias".into(),
        None,
        vec![a, 1],
    );
    add(
        "encoder.conv2.weight".into(),
        "encoder/conv2/weight".into(),
        None,
        vec![a, a, 3],
    );
    add(
        "encoder.conv2.bias".into(),
        "encoder/conv2/bias".into(),
        None,
        vec![a, 1],
    );
    for i in 0..h.n_audio_layer {
        let dst = format!("encoder.blocks.{i}");
        let src = format!("encoder/layer_{i}");
        self_attention_plans(&mut add, &dst, &src, a);
        mlp_plans(&mut add, &dst, &src, a);
    }
    layer_norm_plan(&mut add, "encoder.ln_post", "encoder/layer_norm", a);

    add(
        "decoder.positional_embedding".into(),
        "decoder/position_encodings/encodings".into(),
        None,
        vec![h.n_text_ctx, t],
    );
    add(
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight".into(),
        None,
        vec![h.n_vocab, t],
    );
    for i in 0..h.n_text_layer {
        let dst = format!("decoder.blocks.{i}");
        let src = format!("decoder/layer_{i}");
        self_attention_plans(&mut add, &dst, &src, t);
        cross_attention_plans(&mut add, &dst, &src, t);
        mlp_plans(&mut add, &dst, &src, t);
    }
    layer_norm_plan(&mut add, "decoder.ln", "decoder/layer_norm", t);
    plans
}

type AddFn<'a> = dyn FnMut(String, String, Option<(usize, usize)>, Vec<usize>) + 'a;

fn layer_norm_plan(add: &mut AddFn<'_>, dst: &str, src: &str, n: usize) {
    add(
        format!("{dst}.weight"),
        format!("{src}/gamma"),
        None,
        vec![n],
    );
    add(format!("{dst}.bias"), format!("{src}/beta"), None, vec![n]);
}

fn linear_plan(
    add: &mut AddFn<'_>,
    dst: &str,
    src: &str,
    part: Option<(usize, usize)>,
    (rows, cols): (usize, usize),
    with_bias: bool,
) {
    add(
        format!("{dst}.weight"),
        format!("{src}/weight"),
        part,
        vec![rows, cols],
    );
    if with_bias {
        add(
            format!("{dst}.bias"),
            format!("{src}/bias"),
            part,
            vec![rows],
        );
    }
}

fn self_attention_plans(add: &mut AddFn<'_>, dst: &str, src: &str, n: usize) {
    let qkv = format!("{src}/self_attention/linear_0");
    layer_norm_plan(
        add,
        &format!("{dst}.attn_ln"),
        &format!("{src}/self_attention/layer_norm"),
        n,
    );
    // CTranslate2 fuses Q, K and V into one [3n, n] projection. Whisper's key projection has no
    // bias (CTranslate2 pads zeros there), and whisper.cpp has no slot for one: a key bias would
    // shift every attention logit of a query by the same amount, which softmax ignores.
    linear_plan(
        add,
        &format!("{dst}.attn.query"),
        &qkv,
        Some((0, 3)),
        (n, n),
        true,
    );
    linear_plan(
        add,
        &format!("{dst}.attn.key"),
        &qkv,
        Some((1, 3)),
        (n, n),
        false,
    );
    linear_plan(
        add,
        &format!("{dst}.attn.value"),
        &qkv,
        Some((2, 3)),
        (n, n),
        true,
    );
    linear_plan(
        add,
        &format!("{dst}.attn.out"),
        &format!("{src}/self_attention/linear_1"),
        None,
        (n, n),
        true,
    );
}

fn cross_attention_plans(add: &mut AddFn<'_>, dst: &str, src: &str, n: usize) {
    let kv = format!("{src}/attention/linear_1");
    layer_norm_plan(
        add,
        &format!("{dst}.cross_attn_ln"),
        &format!("{src}/attention/layer_norm"),
        n,
    );
    linear_plan(
        add,
        &format!("{dst}.cross_attn.query"),
        &format!("{src}/attention/linear_0"),
        None,
        (n, n),
        true,
    );
    // Keys and values of the encoder output are fused into one [2n, n] projection.
    linear_plan(
        add,
        &format!("{dst}.cross_attn.key"),
        &kv,
        Some((0, 2)),
        (n, n),
        false,
    );
    linear_plan(
        add,
        &format!("{dst}.cross_attn.value"),
        &kv,
        Some((1, 2)),
        (n, n),
        true,
    );
    linear_plan(
        add,
        &format!("{dst}.cross_attn.out"),
        &format!("{src}/attention/linear_2"),
        None,
        (n, n),
        true,
    );
}

fn mlp_plans(add: &mut AddFn<'_>, dst: &str, src: &str, n: usize) {
    layer_norm_plan(
        add,
        &format!("{dst}.mlp_ln"),
        &format!("{src}/ffn/layer_norm"),
        n,
    );
    linear_plan(
        add,
        &format!("{dst}.mlp.0"),
        &format!("{src}/ffn/linear_0"),
        None,
        (4 * n, n),
        true,
    );
    linear_plan(
        add,
        &format!("{dst}.mlp.2"),
        &format!("{src}/ffn/linear_1"),
        None,
        (n, 4 * n),
        true,
    );
}

/// Checks before writing anything that the source variable exists, is a float or a scaled
/// integer weight, and holds exactly the elements the plan takes from it.
fn check_source(model: &Ct2Model<'_>, plan: &TensorPlan) -> Result<(), ConvertError> {
    let var = model.get(&plan.source)?;
    let scale = model.vars.get(&format!("{}_scale", plan.source));
    match (var.dtype, scale) {
        (Dtype::F32 | Dtype::F16 | Dtype::Bf16, _) => {}
        (Dtype::I8 | Dtype::I16, Some(s))
            if s.len() == 1 || var.shape.first() == Some(&s.len()) => {}
        (Dtype::I8 | Dtype::I16, _) => {
            return Err(ConvertError::MissingTensor {
                path: model.path.clone(),
                name: format!("{}_scale", plan.source),
            })
        }
        (dtype @ Dtype::I32, _) => {
            return Err(ConvertError::UnsupportedWeightDtype {
                path: model.path.clone(),
                name: plan.source.clone(),
                dtype: dtype.name(),
            })
        }
    }
    let parts = plan.part.map_or(1, |(_, count)| count);
    let wanted: usize = plan.shape.iter().product::<usize>() * parts;
    let rows_ok = var.shape.first().copied().unwrap_or(0) == plan.shape[0] * parts;
    if var.len() != wanted || !rows_ok {
        let mut full = plan.shape.clone();
        full[0] *= parts;
        return Err(model.bad_shape(
            &plan.source,
            format!("{} needs {full:?} elements from it", plan.name),
        ));
    }
    Ok(())
}

/// The elements of `plan` as f32, dequantized and sliced out of a fused tensor where needed.
///
/// Rows are the outermost dimension, so a block of rows is a contiguous range of elements.
fn plan_values(model: &Ct2Model<'_>, plan: &TensorPlan) -> Result<Vec<f32>, ConvertError> {
    let var = model.get(&plan.source)?;
    let rows_total = var.shape.first().copied().unwrap_or(1).max(1);
    let row_len = var.len() / rows_total;
    let rows: Range<usize> = match plan.part {
        Some((index, count)) => {
            let block = rows_total / count;
            index * block..(index + 1) * block
        }
        None => 0..rows_total,
    };
    let scale = model.vars.get(&format!("{}_scale", plan.source));
    let mut values = Vec::with_capacity(rows.len() * row_len);
    for row in rows {
        // CTranslate2 quantizes with q = round(w * scale), one scale per output row (int8) or
        // one for the whole tensor (int16).
        let divisor = match (var.dtype, scale) {
            (Dtype::I8 | Dtype::I16, Some(s)) if s.len() == 1 => s.raw(0),
            (Dtype::I8 | Dtype::I16, Some(s)) => s.raw(row),
            _ => 1.0,
        };
        for i in row * row_len..(row + 1) * row_len {
            values.push(var.raw(i) / divisor);
        }
    }
    Ok(values)
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#[derive(Deserialize)]
struct TokenizerJson {
    model: TokenizerModel,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
}

#[derive(Deserialize)]
struct TokenizerModel {
    vocab: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct AddedToken {
    id: usize,
    content: String,
}

/// GPT-2's byte-to-character table, inverted: byte-level BPE spells every byte as a printable
/// character, and whisper.cpp wants the raw bytes back.
fn unicode_to_bytes() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            // 256 + n is always a valid scalar value well below the surrogate range.
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

/// Token byte strings for ids `0..eot`, which is what whisper.cpp reads: it derives
/// `<|endoftext|>` and every later special token from the id alone.
fn read_vocab(bytes: &[u8], path: &Path, n_vocab: usize) -> Result<Vec<Vec<u8>>, ConvertError> {
    let err = |reason: String| ConvertError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let tokenizer: TokenizerJson =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not valid tokenizer JSON: {e}")))?;

    const EOT: &str = "<|endoftext|>";
    let eot = tokenizer
        .added_tokens
        .iter()
        .find(|t| t.content == EOT)
        .map(|t| t.id)
        .or_else(|| tokenizer.model.vocab.get(EOT).copied())
        .ok_or_else(|| err(format!("it has no {EOT} token")))?;
    let multilingual = n_vocab >= MULTILINGUAL_MIN_VOCAB;
    let expected_eot = WHISPER_CPP_EOT_ENGLISH + usize::from(multilingual);
    if eot != expected_eot {
        return Err(err(format!(
            "{EOT} has id {eot}, but whisper.cpp assumes {expected_eot} for a vocabulary of \
             {n_vocab}; the tokenizer does not belong to this model"
        )));
    }

    let decode = unicode_to_bytes();
    let mut vocab: Vec<Option<Vec<u8>>> = vec![None; eot];
    for (token, &id) in &tokenizer.model.vocab {
        if id < eot {
            let raw = token
                .chars()
                .map(|c| decode.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| err(format!("token {id} is not byte-level BPE")))?;
            vocab[id] = Some(raw);
        }
    }
    // Added tokens are stored verbatim rather than byte-encoded.
    for t in &tokenizer.added_tokens {
        if t.id < eot && vocab[t.id].is_none() {
            vocab[t.id] = Some(t.content.as_bytes().to_vec());
        }
    }
    vocab
        .into_iter()
        .enumerate()
        .map(|(id, token)| token.ok_or_else(|| err(format!("token id {id} is missing"))))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Mel filterbank

/// Slaney-scale, Slaney-normalized triangular mel filters, `n_mels × (n_fft/2 + 1)` row-major:
/// the numbers of librosa's `filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)` with its defaults
/// (fmin 0, fmax sr/2, htk False, norm "slaney"), which is what Whisper was trained with.
///
/// The arithmetic follows librosa step by step, including where it rounds to f32, so that the
/// result matches it to the last bit or two rather than merely approximately.
pub fn mel_filterbank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let sr = f64::from(sample_rate);
    // numpy's rfftfreq: k * (1 / (n * d)) with d = 1 / sr.
    let bin_step = 1.0 / (n_fft as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * bin_step).collect();

    // n_mels + 2 points evenly spaced on the mel scale between 0 Hz and Nyquist (numpy linspace).
    let mel_max = hz_to_mel(sr / 2.0);
    let mel_min = hz_to_mel(0.0);
    let n_points = n_mels + 2;
    let step = (mel_max - mel_min) / (n_points - 1) as f64;
    let mel_f: Vec<f64> = (0..n_points)
        .map(|i| {
            if i == n_points - 1 {
                mel_to_hz(mel_max)
            } else {
                mel_to_hz(i as f64 * step + mel_min)
            }
        })
        .collect();

    let mut weights = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let lower_width = mel_f[m + 1] - mel_f[m];
        let upper_width = mel_f[m + 2] - mel_f[m + 1];
        // Slaney normalization: each triangle has unit area in Hz.
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[m] - f) / lower_width;
            let upper = (mel_f[m + 2] - f) / upper_width;
            // numpy's maximum(0, x) keeps x when they compare equal, so -0.0 survives (at the
            // first bin); `f64::max` would not. librosa then stores the triangle in an f32
            // array and scales it in place.
            let v = lower.min(upper);
            let w = if 0.0 > v { 0.0 } else { v } as f32;
            weights[m * n_bins + k] = (f64::from(w) * enorm) as f32;
        }
    }
    weights
}

/// Slaney's mel scale (librosa `hz_to_mel` with `htk=False`): linear below 1 kHz, log above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

// ---------------------------------------------------------------------------------------------
// ggml writer

enum WriteError {
    Io(io::Error),
    Convert(ConvertError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ConvertError> for WriteError {
    fn from(e: ConvertError) -> Self {
        Self::Convert(e)
    }
}

fn write_i32<W: Write>(w: &mut W, value: usize) -> Result<(), WriteError> {
    let value = i32::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{value} does not fit the ggml header's 32-bit fields"),
        )
    })?;
    w.write_all(&value.to_le_bytes())?;
    Ok(())
}

/// Writes the whole ggml file; returns its size in bytes.
fn write_ggml<W: Write>(
    w: &mut W,
    model: &Ct2Model<'_>,
    plan: &Plan,
    vocab: &[Vec<u8>],
) -> Result<u64, WriteError> {
    let mut counter = CountingWriter { inner: w, count: 0 };
    let w = &mut counter;
    let h = &plan.hparams;

    w.write_all(&GGML_MAGIC.to_le_bytes())?;
    for value in [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
    ] {
        write_i32(w, value)?;
    }
    w.write_all(&GGML_FTYPE_F16.to_le_bytes())?;

    let n_bins = N_FFT / 2 + 1;
    write_i32(w, h.n_mels)?;
    write_i32(w, n_bins)?;
    for value in mel_filterbank(SAMPLE_RATE, N_FFT, h.n_mels) {
        w.write_all(&value.to_le_bytes())?;
    }

    write_i32(w, vocab.len())?;
    for token in vocab {
        write_i32(w, token.len())?;
        w.write_all(token)?;
    }

    let mut buf = Vec::new();
    for t in &plan.tensors {
        let values = plan_values(model, t)?;
        write_i32(w, t.shape.len())?;
        write_i32(w, t.name.len())?;
        write_i32(
            w,
            match t.out {
                OutType::F32 => 0,
                OutType::F16 => 1,
            },
        )?;
        // ggml lists dimensions innermost first.
        for &d in t.shape.iter().rev() {
            write_i32(w, d)?;
        }
        w.write_all(t.name.as_bytes())?;
        buf.clear();
        match t.out {
            OutType::F32 => buf.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            OutType::F16 => buf.extend(
                values
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()),
            ),
        }
        w.write_all(&buf)?;
    }
    Ok(counter.count)
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a CTranslate2 `model.bin` (binary version 6) in memory.
    struct Ct2Builder {
        version: u32,
        spec: String,
        vars: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
        aliases: Vec<(String, String)>,
    }

    fn ct2_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    impl Ct2Builder {
        fn new() -> Self {
            Self {
                version: 6,
                spec: "WhisperSpec".into(),
                vars: Vec::new(),
                aliases: Vec::new(),
            }
        }

        fn raw(&mut self, name: &str, shape: &[u32], dtype: u8, data: Vec<u8>) {
            self.vars.push((name.into(), shape.to_vec(), dtype, data));
        }

        fn f16(&mut self, name: &str, shape: &[u32], values: &[f32]) {
            let data = values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
                .collect();
            self.raw(name, shape, 4, data);
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&self.version.to_le_bytes());
            ct2_string(&mut out, &self.spec);
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            for (name, shape, dtype, data) in &self.vars {
                ct2_string(&mut out, name);
                out.push(shape.len() as u8);
                for d in shape {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.push(*dtype);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (alias, target) in &self.aliases {
                ct2_string(&mut out, alias);
                ct2_string(&mut out, target);
            }
            out
        }
    }

    /// Values that f16 holds exactly, different for every variable, so any misplaced slice or
    /// swapped tensor shows up as a mismatch.
    fn pattern(seed: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 251) as f32 / 64.0 - 1.953125)
            .collect()
    }

    const N: usize = 4;
    const N_VOCAB: usize = 51864;

    /// A complete tiny.en-shaped Whisper with width 4, one layer each side and 80 mels.
    fn synthetic_model() -> Ct2Builder {
        let mut b = Ct2Builder::new();
        let mut seed = 0;
        let mut add = |b: &mut Ct2Builder, name: &str, shape: &[usize]| {
            seed += 1;
            let len = shape.iter().product();
            let shape: Vec<u32> = shape.iter().map(|&d| d as u32).collect();
            b.f16(name, &shape, &pattern(seed, len));
        };
        let linear = |b: &mut Ct2Builder,
                      add: &mut dyn FnMut(&mut Ct2Builder, &str, &[usize]),
                      name: &str,
                      rows: usize,
                      cols: usize| {
            add(b, &format!("{name}/weight"), &[rows, cols]);
            add(b, &format!("{name}/bias"), &[rows]);
        };
        let norm = |b: &mut Ct2Builder,
                    add: &mut dyn FnMut(&mut Ct2Builder, &str, &[usize]),
                    name: &str| {
            add(b, &format!("{name}/gamma"), &[N]);
            add(b, &format!("{name}/beta"), &[N]);
        };
        b.raw("decoder/num_heads", &[], 2, 1i16.to_le_bytes().to_vec());
        b.raw("encoder/num_heads", &[], 2, 1i16.to_le_bytes().to_vec());
        b.raw("decoder/activation", &[], 1, vec![3]);
        add(&mut b, "encoder/conv1/weight", &[N, 80, 3]);
        add(&mut b, "encoder/conv1/bias", &[N]);
        add(&mut b, "encoder/conv2/weight", &[N, N, 3]);
        add(&mut b, "encoder/conv2/bias", &[N]);
        add(&mut b, "encoder/position_encodings/encodings", &[6, N]);
        norm(
            &mut b,
            &mut add,
            "encoder/layer_0/self_attention/layer_norm",
        );
        linear(
            &mut b,
            &mut add,
            "encoder/layer_0/self_attention/linear_0",
            3 * N,
            N,
        );
        linear(
            &mut b,
            &mut add,
            "encoder/layer_0/self_attention/linear_1",
            N,
            N,
        );
        norm(&mut b, &mut add, "encoder/layer_0/ffn/layer_norm");
        linear(&mut b, &mut add, "encoder/layer_0/ffn/linear_0", 4 * N, N);
        linear(&mut b, &mut add, "encoder/layer_0/ffn/linear_1", N, 4 * N);
        norm(&mut b, &mut add, "encoder/layer_norm");
        add(&mut b, "decoder/embeddings/weight", &[N_VOCAB, N]);
        add(&mut b, "decoder/position_encodings/encodings", &[5, N]);
        norm(
            &mut b,
            &mut add,
            "decoder/layer_0/self_attention/layer_norm",
        );
        linear(
            &mut b,
            &mut add,
            "decoder/layer_0/self_attention/linear_0",
            3 * N,
            N,
        );
        linear(
            &mut b,
            &mut add,
            "decoder/layer_0/self_attention/linear_1",
            N,
            N,
        );
        norm(&mut b, &mut add, "decoder/layer_0/attention/layer_norm");
        linear(&mut b, &mut add, "decoder/layer_0/attention/linear_0", N, N);
        linear(
            &mut b,
            &mut add,
            "decoder/layer_0/attention/linear_1",
            2 * N,
            N,
        );
        linear(&mut b, &mut add, "decoder/layer_0/attention/linear_2", N, N);
        norm(&mut b, &mut add, "decoder/layer_0/ffn/layer_norm");
        linear(&mut b, &mut add, "decoder/layer_0/ffn/linear_0", 4 * N, N);
        linear(&mut b, &mut add, "decoder/layer_0/ffn/linear_1", N, 4 * N);
        norm(&mut b, &mut add, "decoder/layer_norm");
        b.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        b
    }

    /// A byte-level BPE tokenizer.json: ids 0..256 are the single bytes, spelled through GPT-2's
    /// table; later ids are plain ASCII names.
    fn synthetic_tokenizer() -> Vec<u8> {
        let to_unicode: HashMap<u8, char> = unicode_to_bytes()
            .into_iter()
            .map(|(c, b)| (b, c))
            .collect();
        let mut vocab = serde_json::Map::new();
        for id in 0..=WHISPER_CPP_EOT_ENGLISH {
            let token = match id {
                0..=255 => to_unicode[&(id as u8)].to_string(),
                WHISPER_CPP_EOT_ENGLISH => "<|endoftext|>".to_string(),
                _ => format!("tok{id}"),
            };
            vocab.insert(token, id.into());
        }
        serde_json::to_vec(&serde_json::json!({
            "added_tokens": [
                {"id": 50256, "content": "<|endoftext|>", "special": true},
                {"id": 50257, "content": "<|startoftranscript|>", "special": true}
            ],
            "model": {"type": "BPE", "vocab": vocab, "merges": []}
        }))
        .unwrap()
    }

    fn write_model_dir(model_bin: &[u8], tokenizer: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.bin"), model_bin).unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        dir
    }

    struct GgmlTensor {
        ne: Vec<usize>,
        ftype: i32,
        data: Vec<u8>,
    }

    struct GgmlFile {
        hparams: Vec<i32>,
        mel: (usize, usize, Vec<f32>),
        vocab: Vec<Vec<u8>>,
        tensors: Vec<(String, GgmlTensor)>,
    }

    impl GgmlFile {
        fn parse(bytes: &[u8]) -> Self {
            let mut pos = 0;
            let i32_at = |pos: &mut usize| {
                let v = i32::from_le_bytes(bytes[*pos..*pos + 4].try_into().unwrap());
                *pos += 4;
                v
            };
            assert_eq!(i32_at(&mut pos) as u32, GGML_MAGIC);
            let hparams: Vec<i32> = (0..11).map(|_| i32_at(&mut pos)).collect();
            let n_mel = i32_at(&mut pos) as usize;
            let n_fft = i32_at(&mut pos) as usize;
            let mel = (0..n_mel * n_fft)
                .map(|_| f32::from_bits(i32_at(&mut pos) as u32))
                .collect();
            let n = i32_at(&mut pos) as usize;
            let mut vocab = Vec::new();
            for _ in 0..n {
                let len = i32_at(&mut pos) as usize;
                vocab.push(bytes[pos..pos + len].to_vec());
                pos += len;
            }
            let mut tensors = Vec::new();
            while pos < bytes.len() {
                let n_dims = i32_at(&mut pos) as usize;
                let name_len = i32_at(&mut pos) as usize;
                let ftype = i32_at(&mut pos);
                let ne: Vec<usize> = (0..n_dims).map(|_| i32_at(&mut pos) as usize).collect();
                let name = String::from_utf8(bytes[pos..pos + name_len].to_vec()).unwrap();
                pos += name_len;
                let size = ne.iter().product::<usize>() * if ftype == 0 { 4 } else { 2 };
                let data = bytes[pos..pos + size].to_vec();
                pos += size;
                tensors.push((name, GgmlTensor { ne, ftype, data }));
            }
            Self {
                hparams,
                mel: (n_mel, n_fft, mel),
                vocab,
                tensors,
            }
        }

        fn tensor(&self, name: &str) -> &GgmlTensor {
            &self
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} not written"))
                .1
        }

        fn values(&self, name: &str) -> Vec<f32> {
            let t = self.tensor(name);
            match t.ftype {
                0 => t
                    .data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                _ => t
                    .data
                    .chunks_exact(2)
                    .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                    .collect(),
            }
        }
    }

    fn source_values(b: &Ct2Builder, name: &str) -> Vec<f32> {
        let (_, _, dtype, data) = b.vars.iter().find(|v| v.0 == name).unwrap();
        assert_eq!(*dtype, 4);
        data.chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect()
    }

    fn convert_synthetic(b: &Ct2Builder) -> (ConvertReport, GgmlFile) {
        let dir = write_model_dir(&b.bytes(), &synthetic_tokenizer());
        let out = dir.path().join("ggml-test.bin");
        let report = convert_ct2_to_ggml(dir.path(), &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(report.output_bytes, bytes.len() as u64);
        (report, GgmlFile::parse(&bytes))
    }

    #[test]
    fn synthetic_model_converts_to_the_layout_whisper_cpp_reads() {
        let b = synthetic_model();
        let (report, ggml) = convert_synthetic(&b);

        assert_eq!(
            ggml.hparams,
            vec![N_VOCAB as i32, 6, 4, 1, 1, 5, 4, 1, 1, 80, GGML_FTYPE_F16]
        );
        assert_eq!(report.n_vocab, N_VOCAB);
        assert_eq!((report.n_audio_layer, report.n_text_layer), (1, 1));
        assert!(!report.multilingual);
        assert_eq!(report.source_dtype, "f16");
        // 7 encoder-wide + 15 per encoder block + 4 decoder-wide + 24 per decoder block.
        assert_eq!(report.n_tensors, 7 + 15 + 4 + 24);
        assert_eq!(ggml.tensors.len(), report.n_tensors);

        assert_eq!((ggml.mel.0, ggml.mel.1), (80, 201));
        assert_eq!(ggml.mel.2, mel_filterbank(16_000, 400, 80));

        assert_eq!(ggml.vocab.len(), WHISPER_CPP_EOT_ENGLISH);
        assert_eq!(report.n_vocab_entries, WHISPER_CPP_EOT_ENGLISH);
        for byte in 0..=255u8 {
            assert_eq!(ggml.vocab[usize::from(byte)], vec![byte]);
        }
        assert_eq!(ggml.vocab[300], b"tok300");

        // Dims are written innermost first; dtypes follow whisper.cpp's expectations.
        let conv1 = ggml.tensor("encoder.conv1.weight");
        assert_eq!((conv1.ne.clone(), conv1.ftype), (vec![3, 80, N], 1));
        let conv_bias = ggml.tensor("encoder.conv1.bias");
        assert_eq!((conv_bias.ne.clone(), conv_bias.ftype), (vec![1, N], 0));
        let pos = ggml.tensor("encoder.positional_embedding");
        assert_eq!((pos.ne.clone(), pos.ftype), (vec![N, 6], 0));
        let tok = ggml.tensor("decoder.token_embedding.weight");
        assert_eq!((tok.ne.clone(), tok.ftype), (vec![N, N_VOCAB], 1));
        let ln = ggml.tensor("decoder.ln.bias");
        assert_eq!((ln.ne.clone(), ln.ftype), (vec![N], 0));
        let fc1 = ggml.tensor("decoder.blocks.0.mlp.0.weight");
        assert_eq!((fc1.ne.clone(), fc1.ftype), (vec![N, 4 * N], 1));

        // Straight copies keep every value.
        for (dst, src) in [
            ("encoder.conv1.weight", "encoder/conv1/weight"),
            ("encoder.conv2.bias", "encoder/conv2/bias"),
            (
                "decoder.token_embedding.weight",
                "decoder/embeddings/weight",
            ),
            (
                "decoder.positional_embedding",
                "decoder/position_encodings/encodings",
            ),
            ("encoder.ln_post.weight", "encoder/layer_norm/gamma"),
            ("decoder.ln.bias", "decoder/layer_norm/beta"),
            (
                "encoder.blocks.0.attn_ln.weight",
                "encoder/layer_0/self_attention/layer_norm/gamma",
            ),
            (
                "encoder.blocks.0.attn.out.weight",
                "encoder/layer_0/self_attention/linear_1/weight",
            ),
            (
                "encoder.blocks.0.mlp_ln.bias",
                "encoder/layer_0/ffn/layer_norm/beta",
            ),
            (
                "encoder.blocks.0.mlp.2.weight",
                "encoder/layer_0/ffn/linear_1/weight",
            ),
            (
                "decoder.blocks.0.cross_attn_ln.weight",
                "decoder/layer_0/attention/layer_norm/gamma",
            ),
            (
                "decoder.blocks.0.cross_attn.query.bias",
                "decoder/layer_0/attention/linear_0/bias",
            ),
            (
                "decoder.blocks.0.cross_attn.out.weight",
                "decoder/layer_0/attention/linear_2/weight",
            ),
            (
                "decoder.blocks.0.mlp.0.bias",
                "decoder/layer_0/ffn/linear_0/bias",
            ),
        ] {
            assert_eq!(ggml.values(dst), source_values(&b, src), "{dst}");
        }

        // Fused cross-attention K/V: keys are the first half of the rows, values the second.
        let kv = source_values(&b, "decoder/layer_0/attention/linear_1/weight");
        assert_eq!(
            ggml.values("decoder.blocks.0.cross_attn.key.weight"),
            kv[..N * N]
        );
        assert_eq!(
            ggml.values("decoder.blocks.0.cross_attn.value.weight"),
            kv[N * N..]
        );
        let kv_bias = source_values(&b, "decoder/layer_0/attention/linear_1/bias");
        assert_eq!(
            ggml.values("decoder.blocks.0.cross_attn.value.bias"),
            kv_bias[N..]
        );
        let names: Vec<&str> = ggml.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"decoder.blocks.0.cross_attn.key.bias"));
        assert!(!names.contains(&"encoder.blocks.0.attn.key.bias"));
    }

    #[test]
    fn fused_qkv_splits_into_query_key_value_row_blocks() {
        let mut b = synthetic_model();
        // Row r, column c holds 100 r + c, so each output's origin is readable from its values.
        let weight: Vec<f32> = (0..3 * N)
            .flat_map(|r| (0..N).map(move |c| (100 * r + c) as f32))
            .collect();
        let bias: Vec<f32> = (0..3 * N).map(|r| -(r as f32)).collect();
        let name = "encoder/layer_0/self_attention/linear_0";
        b.vars.retain(|v| !v.0.starts_with(name));
        b.f16(
            &format!("{name}/weight"),
            &[3 * N as u32, N as u32],
            &weight,
        );
        b.f16(&format!("{name}/bias"), &[3 * N as u32], &bias);

        let (_, ggml) = convert_synthetic(&b);
        let block = |k: usize| -> Vec<f32> {
            (k * N..(k + 1) * N)
                .flat_map(|r| (0..N).map(move |c| (100 * r + c) as f32))
                .collect()
        };
        assert_eq!(ggml.values("encoder.blocks.0.attn.query.weight"), block(0));
        assert_eq!(ggml.values("encoder.blocks.0.attn.key.weight"), block(1));
        assert_eq!(ggml.values("encoder.blocks.0.attn.value.weight"), block(2));
        assert_eq!(
            ggml.values("encoder.blocks.0.attn.query.bias"),
            vec![-0.0, -1.0, -2.0, -3.0]
        );
        assert_eq!(
            ggml.values("encoder.blocks.0.attn.value.bias"),
            vec![-8.0, -9.0, -10.0, -11.0]
        );
        assert_eq!(
            ggml.tensor("encoder.blocks.0.attn.key.weight").ne,
            vec![N, N]
        );
    }

    #[test]
    fn int8_weights_are_dequantized_with_their_row_scales() {
        let mut b = synthetic_model();
        let name = "decoder/layer_0/ffn/linear_1/weight";
        b.vars.retain(|v| v.0 != name);
        // Row r holds q = r - 2 + c; scale 127/amax per row, CTranslate2-style.
        let rows = N;
        let cols = 4 * N;
        let q: Vec<i8> = (0..rows * cols)
            .map(|i| (i / cols) as i8 - 2 + (i % cols) as i8)
            .collect();
        let scales: Vec<f32> = (0..rows).map(|r| 2.0 + r as f32).collect();
        b.raw(
            name,
            &[rows as u32, cols as u32],
            1,
            q.iter().map(|&v| v as u8).collect(),
        );
        b.raw(
            &format!("{name}_scale"),
            &[rows as u32],
            0,
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        );
        let (_, ggml) = convert_synthetic(&b);
        let expected: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| f16::from_f32(f32::from(v) / scales[i / cols]).to_f32())
            .collect();
        assert_eq!(ggml.values("decoder.blocks.0.mlp.2.weight"), expected);
    }

    #[test]
    fn bf16_and_f32_sources_are_accepted() {
        let mut b = synthetic_model();
        let name = "encoder/layer_norm/gamma";
        b.vars.retain(|v| v.0 != name);
        let values = [1.5f32, -2.0, 0.25, 3.0];
        b.raw(
            name,
            &[4],
            5,
            values
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
        );
        let name = "encoder/layer_norm/beta";
        b.vars.retain(|v| v.0 != name);
        b.raw(
            name,
            &[4],
            0,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let (_, ggml) = convert_synthetic(&b);
        assert_eq!(ggml.values("encoder.ln_post.weight"), values);
        assert_eq!(ggml.values("encoder.ln_post.bias"), values);
    }

    fn convert_err(model_bin: &[u8], tokenizer: &[u8]) -> (ConvertError, tempfile::TempDir) {
        let dir = write_model_dir(model_bin, tokenizer);
        let out = dir.path().join("out.bin");
        let err = convert_ct2_to_ggml(dir.path(), &out).unwrap_err();
        // No output and no leftover temporary file after any failure.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["model.bin", "tokenizer.json", "config.json"].contains(&n.as_str()))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
        (err, dir)
    }

    #[test]
    fn wrong_spec_is_refused() {
        let mut b = synthetic_model();
        b.spec = "TransformerSpec".into();
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        assert!(matches!(&err, ConvertError::WrongSpec { spec, .. } if spec == "TransformerSpec"));
        assert!(err.to_string().contains("not a CTranslate2 Whisper model"));
    }

    #[test]
    fn unsupported_binary_version_is_refused() {
        let mut b = synthetic_model();
        b.version = 5;
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        assert!(matches!(
            err,
            ConvertError::UnsupportedVersion { version: 5, .. }
        ));
    }

    #[test]
    fn unknown_dtype_is_refused() {
        let mut b = synthetic_model();
        b.raw("decoder/mystery", &[1], 9, vec![0]);
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        let ConvertError::UnknownDtype { name, code, .. } = err else {
            panic!("{err}")
        };
        assert_eq!((name.as_str(), code), ("decoder/mystery", 9));
    }

    #[test]
    fn missing_tensor_is_named() {
        let mut b = synthetic_model();
        b.vars
            .retain(|v| v.0 != "decoder/layer_0/attention/linear_2/bias");
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        let ConvertError::MissingTensor { name, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(name, "decoder/layer_0/attention/linear_2/bias");
    }

    #[test]
    fn int8_weight_without_scale_is_refused() {
        let mut b = synthetic_model();
        let name = "encoder/conv2/weight";
        b.vars.retain(|v| v.0 != name);
        b.raw(name, &[N as u32, N as u32, 3], 1, vec![1; N * N * 3]);
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        let ConvertError::MissingTensor { name, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(name, "encoder/conv2/weight_scale");
    }

    #[test]
    fn wrong_shape_is_refused() {
        let mut b = synthetic_model();
        let name = "encoder/layer_0/self_attention/linear_0/weight";
        b.vars.retain(|v| v.0 != name);
        b.f16(name, &[2 * N as u32, N as u32], &pattern(1, 2 * N * N));
        let (err, _dir) = convert_err(&b.bytes(), &synthetic_tokenizer());
        assert!(
            matches!(&err, ConvertError::BadShape { name: n, .. } if n == name),
            "{err}"
        );
    }

    #[test]
    fn truncated_file_is_reported_at_every_cut() {
        let bytes = synthetic_model().bytes();
        let path = Path::new("model.bin");
        // Every cut must give a clean error, never a panic or a silently shorter model.
        for cut in (0..bytes.len() - 4)
            .step_by(997)
            .chain([bytes.len() - 5, bytes.len() - 1])
        {
            let result = Ct2Model::parse(&bytes[..cut], path);
            assert!(
                matches!(result, Err(ConvertError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let (err, _dir) = convert_err(&bytes[..bytes.len() / 2], &synthetic_tokenizer());
        assert!(err.to_string().contains("ends early"), "{err}");
    }

    #[test]
    fn missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = convert_ct2_to_ggml(dir.path(), &dir.path().join("out.bin")).unwrap_err();
        assert!(matches!(&err, ConvertError::Read { .. }));

        let dir = write_model_dir(&synthetic_model().bytes(), b"");
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let err = convert_ct2_to_ggml(dir.path(), &dir.path().join("out.bin")).unwrap_err();
        assert!(
            matches!(&err, ConvertError::Read { path, .. } if path.ends_with("tokenizer.json"))
        );
    }

    #[test]
    fn tokenizer_with_other_eot_id_is_refused() {
        let tokenizer = serde_json::to_vec(&serde_json::json!({
            "added_tokens": [{"id": 7, "content": "<|endoftext|>"}],
            "model": {"vocab": {"a": 0}}
        }))
        .unwrap();
        let (err, _dir) = convert_err(&synthetic_model().bytes(), &tokenizer);
        assert!(matches!(err, ConvertError::Tokenizer { .. }), "{err}");
    }

    #[test]
    fn failed_conversion_keeps_the_previous_model() {
        let mut b = synthetic_model();
        b.spec = "TransformerSpec".into();
        let dir = write_model_dir(&b.bytes(), &synthetic_tokenizer());
        let out = dir.path().join("ggml.bin");
        std::fs::write(&out, b"previous model").unwrap();
        assert!(convert_ct2_to_ggml(dir.path(), &out).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    }

    #[test]
    fn byte_level_bpe_characters_decode_to_bytes() {
        let table = unicode_to_bytes();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'Ġ'], b' ');
        assert_eq!(table[&'Ċ'], b'\n');
        assert_eq!(table[&'A'], b'A');
        assert_eq!(table[&'Ā'], 0);
        assert_eq!(table[&'ÿ'], 0xFF);
    }

    /// Reference values printed by librosa 0.11.0 (numpy 2.4):
    /// `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`. The implementation reproduces
    /// librosa's roundings, so the values must match exactly (all 16,080 did when checked).
    #[test]
    fn mel_filterbank_matches_librosa() {
        let mel = mel_filterbank(16_000, 400, 80);
        assert_eq!(mel.len(), 80 * 201);
        let at = |m: usize, k: usize| mel[m * 201 + k];
        for (m, k, want) in [
            (0, 1, 0.024_862_595_f32),
            (1, 2, 0.022_871_772),
            (20, 19, 0.010_972_2),
            (20, 20, 0.013_890_394),
            (40, 42, 0.005_411_104_8),
            (40, 43, 0.014_735_566),
            (40, 44, 0.006_518_19),
            (60, 93, 0.006_591_093),
            (79, 186, 0.000_366_741_67),
            (79, 190, 0.002_232_055),
            (79, 199, 0.000_448_759),
        ] {
            assert_eq!(at(m, k), want, "mel[{m},{k}]");
        }
        // librosa's first bin is -0.0 (numpy's maximum keeps the negative zero).
        assert_eq!(at(0, 0).to_bits(), (-0.0f32).to_bits());
        for (m, k) in [
            (0, 0),
            (0, 2),
            (1, 3),
            (10, 25),
            (40, 50),
            (79, 200),
            (79, 185),
        ] {
            assert_eq!(at(m, k), 0.0, "mel[{m},{k}]");
        }
        assert_eq!(mel.iter().filter(|&&w| w > 0.0).count(), 391);
        let total: f64 = mel.iter().map(|&w| f64::from(w)).sum();
        assert!(
            (total - 1.999_024_092_387_117).abs() < 1e-9,
            "total {total}"
        );
    }
}
